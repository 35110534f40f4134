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
MAX_SEED = 2**32 - 1  # the largest seed numpy, torch and scikit-learn all accept
NETWORK_METHODS = ("multimodal", "autoencoder", "positional", "image")  # st.tl.impute methods with a trained model
LIBRARY_COLUMN = "library_id"  # the obs column naming each spot's section (anndata.concat(label=...), squidpy)
