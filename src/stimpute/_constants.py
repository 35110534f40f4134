"""Key names used throughout stimpute (one place, like squidpy's ``Key``)."""

from __future__ import annotations

SPATIAL_KEY = "spatial"  # adata.obsm[...] and adata.uns[...]
IMAGE_KEYS = ("hires", "lowres")  # in order of preference (highest resolution first)
SCALEF = "tissue_{img_key}_scalef"
SPOT_DIAMETER = "spot_diameter_fullres"

HOLDOUT_KEY = "holdout"
TRAIN_SUFFIX = "_train"
TEST_SUFFIX = "_test"
HIDDEN_SPOT_SUFFIX = "_hidden_spot"  # obs column for strategy="spots"

IMAGE_FEATURES_KEY = "X_image"
IMAGE_N_COMPS = 30  # st.pp.image_features' default number of principal components
HANDCRAFTED_INPUT_SIDE = 64  # pixels: the handcrafted encoder's default tile input side
CNN_INPUT_SIDE = 224  # pixels: the CNN encoders' default input side (the ImageNet training crop)
CLUSTERS_KEY = "clusters"
IMPUTED_PREFIX = "imputed_"
LATENT_PREFIX = "X_"  # obsm[LATENT_PREFIX + key_added]: the fused latent of a learned method
DEFAULT_COMPARED_LAYERS = ("X", HOLDOUT_KEY + TRAIN_SUFFIX, IMPUTED_PREFIX + "multimodal")  # st.tl.compare_clusters
MAX_SEED = 2**32 - 1  # the largest seed numpy, torch and scikit-learn all accept
NETWORK_METHODS = ("multimodal", "autoencoder", "positional", "image")  # st.tl.impute methods with a trained model
METHODS = (*NETWORK_METHODS, "knn")  # every st.tl.impute method
LOSSES = ("mse", "nb", "poisson")  # st.tl.impute's loss=
OUTPUTS = ("conditional", "expected", "normalized")  # st.tl.impute's output= (the readouts)
MODALITIES = ("counts", "position", "image")  # the fused network's inputs, in this order
GRAPH_MODALITY = "graph"  # the graph encoder's place in the fusion (built from the counts and positions)
LIBRARY_COLUMN = "library_id"  # the obs column naming each spot's section (anndata.concat(label=...), squidpy)
