"""One table of bad inputs across the public functions: the error type, its message, and no side effects.

Each row is ``(setup, call, error, match)``: ``setup(adata)`` turns a fresh synthetic section into the bad
input (and returns it), ``call(adata, tmp_path)`` calls the public function. After the error the AnnData
(the values of X, the layers, obs, var and obsm; the uns keys) and ``st.settings`` must be exactly as
before the call.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import stimpute as st
from stimpute.get._spatial import set_spatial


# setups ---------------------------------------------------------------------------------------------------
def same(a):
    return a


def empty(a):
    return a[:0].copy()


def no_obs(a):
    return ad.AnnData(sparse.csr_matrix((0, 5), dtype=np.float32))


def negative(a):
    a.X = a.X.copy()
    a.X.data[0] = -3
    return a


def with_nan(a):
    X = a.X.toarray().astype(np.float32)
    X[3, 4] = np.nan
    a.X = sparse.csr_matrix(X)
    return a


def non_integer(a):
    a.X = sparse.csr_matrix(a.X.toarray() * 0.5)
    return a


def one_nonzero(a):
    X = np.zeros(a.shape, dtype=np.int32)
    X[1, 2] = 4
    a.X = sparse.csr_matrix(X)
    return a


def three_nonzeros(a):
    X = np.zeros(a.shape, dtype=np.int32)
    X[1, 2], X[5, 6], X[7, 1] = 4, 1, 2
    a.X = sparse.csr_matrix(X)
    return a


def zero_first_spot(a):
    X = a.X.toarray()
    X[0] = 0
    a.X = sparse.csr_matrix(X)
    return a


def no_obsm(a):
    del a.obsm["spatial"]
    return a


def bad_obsm_shape(a):
    a.obsm["spatial"] = a.obsm["spatial"][:, :1].copy()
    return a


def nan_coords(a):
    coords = a.obsm["spatial"].copy()
    coords[4, 1] = np.nan
    a.obsm["spatial"] = coords
    return a


def no_uns(a):
    del a.uns["spatial"]
    return a


def empty_uns(a):
    a.uns["spatial"] = {}
    return a


def two_libraries(a):
    entry = a.uns["spatial"]["synthetic"]
    set_spatial(a, "other", images=entry["images"], scalefactors=entry["scalefactors"])
    return a


def no_images(a):
    a.uns["spatial"]["synthetic"]["images"] = {}
    return a


def no_scalef(a):
    del a.uns["spatial"]["synthetic"]["scalefactors"]["tissue_hires_scalef"]
    return a


def negative_scalef(a):
    a.uns["spatial"]["synthetic"]["scalefactors"]["tissue_hires_scalef"] = -0.2
    return a


def no_diameter(a):
    del a.uns["spatial"]["synthetic"]["scalefactors"]["spot_diameter_fullres"]
    return a


def held_out(a):
    st.pp.holdout(a, 0.5)
    a.layers["imputed"] = a.X.toarray().astype(np.float32)
    return a


def held_out_nan(a):
    held_out(a)
    a.layers["imputed"][:] = np.nan
    return a


def held_out_layers_missing(a):
    held_out(a)
    del a.layers["holdout_test"]
    return a


def held_out_spots_column_missing(a):
    st.pp.holdout(a, 0.5, strategy="spots")
    a.layers["imputed"] = a.X.toarray().astype(np.float32)
    del a.obs["holdout_hidden_spot"]
    return a


def image_features(a, values=None):
    a.obsm["X_image"] = np.arange(a.n_obs * 4, dtype=np.float64).reshape(a.n_obs, 4) if values is None else values
    return a


def image_nan(a):
    image_features(a)
    a.obsm["X_image"][5, 2] = np.nan
    return a


def image_3d(a):
    return image_features(a, np.zeros((a.n_obs, 2, 2)))


def image_strings(a):
    return image_features(a, np.full((a.n_obs, 2), "a"))


def one_label(a):
    labels = pd.Series(pd.NA, index=a.obs_names, dtype="object")
    labels.iloc[3] = "L1"
    a.obs["labels"] = pd.Categorical(labels)
    return a


holdout, evaluate, impute, compare, features = (
    st.pp.holdout,
    st.tl.evaluate,
    st.tl.impute,
    st.tl.compare_clusters,
    st.pp.image_features,
)
FRACTION = r"`fraction` must be a number strictly between 0 and 1"

# the table --------------------------------------------------------------------------------------------------
CASES = [
    # pp.holdout
    ("holdout-not-anndata", same, lambda a, t: holdout(a.X), TypeError, "must be an AnnData object, got csr_matrix"),
    ("holdout-empty", empty, lambda a, t: holdout(a), ValueError, r"`adata` is empty \(0 spots x 50 genes\)"),
    ("holdout-empty-genes", no_obs, lambda a, t: holdout(a), ValueError, "is empty"),
    ("holdout-missing-layer", same, lambda a, t: holdout(a, layer="counts"), KeyError, r"`adata.layers\['counts'\]` not found"),
    ("holdout-layer-type", same, lambda a, t: holdout(a, layer=3), TypeError, "`layer` must be a string"),
    ("holdout-negative", negative, lambda a, t: holdout(a), ValueError, r"negative values \(min -3\)"),
    ("holdout-nan", with_nan, lambda a, t: holdout(a), ValueError, "1 NaN or infinite values"),
    ("thinning-non-integer", non_integer, lambda a, t: holdout(a, strategy="thinning"), ValueError, "non-integer values"),
    ("holdout-fraction-0", same, lambda a, t: holdout(a, 0), ValueError, FRACTION + ", got 0"),
    ("holdout-fraction-1", same, lambda a, t: holdout(a, 1), ValueError, FRACTION + ", got 1"),
    ("holdout-fraction-neg", same, lambda a, t: holdout(a, -0.1), ValueError, FRACTION + r", got -0\.1"),
    ("holdout-fraction-str", same, lambda a, t: holdout(a, "half"), ValueError, FRACTION + ", got 'half'"),
    ("holdout-fraction-bool", same, lambda a, t: holdout(a, True), ValueError, FRACTION),
    ("holdout-fraction-nan", same, lambda a, t: holdout(a, float("nan")), ValueError, FRACTION),
    ("holdout-one-nonzero", one_nonzero, lambda a, t: holdout(a), ValueError, "has 1 non-zero entries; at least 2"),
    ("holdout-too-few-entries", three_nonzeros, lambda a, t: holdout(a, 0.1), ValueError, "3 non-zero entries, too few"),
    ("holdout-too-few-spots", same, lambda a, t: holdout(a, 0.001, strategy="spots"), ValueError, "200 spots, too few"),
    ("holdout-unknown-strategy", same, lambda a, t: holdout(a, strategy="rows"), ValueError, r"`strategy` must be one of \['entries'"),
    ("holdout-no-eligible-gene", zero_first_spot, lambda a, t: holdout(a, strategy="gene_folds", min_spot_fraction=1.0), ValueError, "nothing to hide"),
    ("holdout-min-spot-fraction", same, lambda a, t: holdout(a, strategy="gene_folds", min_spot_fraction=1.5), ValueError, "`min_spot_fraction`"),
    ("holdout-fold-range", same, lambda a, t: holdout(a, 0.25, strategy="gene_folds", fold=4), ValueError, "`fold` must be below"),
    ("holdout-fold-negative", same, lambda a, t: holdout(a, strategy="gene_folds", fold=-1), ValueError, "`fold` must be >= 0"),
    ("holdout-key-empty", same, lambda a, t: holdout(a, key_added=""), TypeError, "`key_added` must be a non-empty string"),
    ("holdout-random-state", same, lambda a, t: holdout(a, random_state=-1), TypeError, "`random_state` must be a non-negative integer"),
    ("holdout-random-state-str", same, lambda a, t: holdout(a, random_state="0"), TypeError, "`random_state`"),
    # tl.evaluate
    ("evaluate-empty", empty, lambda a, t: evaluate(a, "imputed"), ValueError, "is empty"),
    ("evaluate-no-holdout", same, lambda a, t: evaluate(a, "imputed"), KeyError, r"`adata.uns\['holdout'\]` not found; run `st.pp.holdout"),
    ("evaluate-wrong-key", held_out, lambda a, t: evaluate(a, "imputed", holdout_key="split"), KeyError, r"uns\['split'\]"),
    ("evaluate-missing-layer", held_out, lambda a, t: evaluate(a, "imputd"), KeyError, r"`adata.layers\['imputd'\]` not found \(`layers`\)"),
    ("evaluate-layers-type", held_out, lambda a, t: evaluate(a, 3), TypeError, "`layers` must be a layer name"),
    ("evaluate-nan-prediction", held_out_nan, lambda a, t: evaluate(a, "imputed"), ValueError, "NaN or infinite values at hidden entries"),
    ("evaluate-holdout-layer-gone", held_out_layers_missing, lambda a, t: evaluate(a, "imputed"), KeyError, r"holdout_test.*Run `st.pp.holdout"),
    ("evaluate-spot-column-gone", held_out_spots_column_missing, lambda a, t: evaluate(a, "imputed"), KeyError, r"obs\['holdout_hidden_spot'\]"),
    ("evaluate-min-entries-str", held_out, lambda a, t: evaluate(a, "imputed", min_gene_entries="x"), TypeError, "`min_gene_entries` must be an integer, got 'x'"),
    ("evaluate-min-entries-none", held_out, lambda a, t: evaluate(a, "imputed", min_gene_entries=None), TypeError, "`min_gene_entries` must be an integer, got None"),
    ("evaluate-min-entries-neg", held_out, lambda a, t: evaluate(a, "imputed", min_gene_entries=-5), ValueError, "`min_gene_entries` must be >= 1, got -5"),
    ("evaluate-min-entries-zero", held_out, lambda a, t: evaluate(a, "imputed", min_gene_entries=0), ValueError, "`min_gene_entries` must be >= 1, got 0"),
    ("evaluate-min-entries-float", held_out, lambda a, t: evaluate(a, "imputed", min_gene_entries=2.5), TypeError, r"`min_gene_entries` must be an integer, got 2\.5"),
    ("evaluate-min-entries-bool", held_out, lambda a, t: evaluate(a, "imputed", min_gene_entries=True), TypeError, "`min_gene_entries` must be an integer"),
    ("evaluate-baselines-str", held_out, lambda a, t: evaluate(a, "imputed", baselines="yes"), TypeError, "`baselines` must be True or False, got 'yes'"),
    ("evaluate-baselines-int", held_out, lambda a, t: evaluate(a, "imputed", baselines=1), TypeError, "`baselines` must be True or False, got 1"),
    ("evaluate-baselines-none", held_out, lambda a, t: evaluate(a, "imputed", baselines=None), TypeError, "`baselines`"),
    # tl.impute (max_epochs=1 keeps a missing check from training for long)
    ("impute-not-anndata", same, lambda a, t: impute(a.X, "knn"), TypeError, "`adata` must be an AnnData object, got csr_matrix"),
    ("impute-image-nan", image_nan, lambda a, t: impute(a, "image", max_epochs=1), ValueError, r"`adata.obsm\['X_image'\]` contains NaN or infinite values"),
    ("impute-image-nan-multimodal", image_nan, lambda a, t: impute(a, "multimodal", max_epochs=1), ValueError, r"obsm\['X_image'\]` contains NaN"),
    ("impute-image-3d", image_3d, lambda a, t: impute(a, "image", max_epochs=1), ValueError, r"must be a numeric \(n_obs, n_features\) array, got shape \(200, 2, 2\)"),
    ("impute-image-strings", image_strings, lambda a, t: impute(a, "image", max_epochs=1), ValueError, r"`adata.obsm\['X_image'\]` must be a numeric"),
    ("impute-image-key-empty", image_features, lambda a, t: impute(a, "image", image_key="", max_epochs=1), TypeError, "`image_key` must be a non-empty string"),
    ("impute-image-key-type", image_features, lambda a, t: impute(a, "image", image_key=3, max_epochs=1), TypeError, "`image_key` must be a non-empty string, got 3"),
    ("impute-lr-decay-0", same, lambda a, t: impute(a, "autoencoder", lr_decay=0, max_epochs=1), ValueError, r"`lr_decay` must be in \(0, 1\].*got 0"),
    ("impute-lr-decay-big", same, lambda a, t: impute(a, "autoencoder", lr_decay=1.5, max_epochs=1), ValueError, "`lr_decay` must be in"),
    ("impute-dropout", same, lambda a, t: impute(a, "autoencoder", dropout=0.95, max_epochs=1), ValueError, r"`dropout` must be in \[0, 0\.9\], got 0\.95"),
    ("impute-dropout-negative", same, lambda a, t: impute(a, "autoencoder", dropout=-0.1, max_epochs=1), ValueError, "`dropout` must be a non-negative number"),
    ("impute-detection-str", same, lambda a, t: impute(a, "autoencoder", detection="yes", max_epochs=1), TypeError, "`detection` must be True or False, got 'yes'"),
    ("impute-detection-nb", same, lambda a, t: impute(a, "autoencoder", detection=True, loss="nb", max_epochs=1), ValueError, r"`detection=True` cannot be combined with `loss='nb'`.*Drop `detection=True`"),
    ("impute-detection-poisson", same, lambda a, t: impute(a, "multimodal", detection=True, loss="poisson", output="expected", max_epochs=1), ValueError, r"`detection=True` cannot be combined with `loss='poisson'`"),
    ("impute-count-hidden-zero", same, lambda a, t: impute(a, "autoencoder", count_hidden=(0,), max_epochs=1), ValueError, r"`count_hidden` must be a tuple of positive layer widths.*got \(0,\)"),
    ("impute-output", same, lambda a, t: impute(a, "knn", output="counts"), ValueError, r"`output` must be one of \['conditional', 'expected', 'normalized'\], got 'counts'"),
    ("impute-output-learned", same, lambda a, t: impute(a, "autoencoder", output="log1p", max_epochs=1), ValueError, "`output` must be one of"),
    # tl.compare_clusters
    ("clusters-one-label", one_label, lambda a, t: compare(a, ["X"], labels_key="labels"), ValueError, r"`adata.obs\['labels'\]` has fewer than two non-missing labels"),
    ("clusters-random-state-str", same, lambda a, t: compare(a, ["X"], random_state="a"), TypeError, "`random_state` must be a non-negative integer or None, got 'a'"),
    ("clusters-random-state-neg", same, lambda a, t: compare(a, ["X"], random_state=-1), TypeError, "`random_state`"),
    ("clusters-labels-key-type", same, lambda a, t: compare(a, ["X"], labels_key=3), TypeError, "`labels_key` must be a column name of `adata.obs` or None, got int"),
    ("clusters-key-empty", same, lambda a, t: compare(a, ["X"], key_added=""), TypeError, "`key_added` must be a non-empty string"),
    ("clusters-n-top-genes", same, lambda a, t: compare(a, ["X"], n_top_genes=1), ValueError, "`n_top_genes` must be >= 2, got 1"),
    ("clusters-n-pcs", same, lambda a, t: compare(a, ["X"], n_pcs=0), ValueError, "`n_pcs` must be >= 1, got 0"),
    ("clusters-n-neighbors", same, lambda a, t: compare(a, ["X"], n_neighbors=1), ValueError, "`n_neighbors` must be >= 2, got 1"),
    # pp.image_features
    ("features-batch-size-0", same, lambda a, t: features(a, batch_size=0), ValueError, "`batch_size` must be >= 1, got 0"),
    ("features-batch-size-str", same, lambda a, t: features(a, batch_size="8"), TypeError, "`batch_size` must be an integer"),
    ("features-key-empty", same, lambda a, t: features(a, key_added=""), TypeError, "`key_added` must be a non-empty string"),
    ("features-key-type", same, lambda a, t: features(a, key_added=None), TypeError, "`key_added` must be a non-empty string, got None"),
    ("features-random-state", same, lambda a, t: features(a, random_state=-1), TypeError, "`random_state` must be a non-negative integer"),
    ("features-random-state-str", same, lambda a, t: features(a, random_state="a"), TypeError, "`random_state`"),
    ("features-device", same, lambda a, t: features(a, device="gpu"), ValueError, "`device` must be 'auto', 'cpu'.*got 'gpu'"),
    ("features-weights-int", same, lambda a, t: features(a, weights=3), ValueError, "`weights` must be None for encoder='handcrafted'.*got 3"),
    ("features-weights-int-cnn", same, lambda a, t: features(a, encoder="resnet18", weights=3), TypeError, "`weights` must be 'imagenet', 'random' or a path to a checkpoint file, got int"),
    # get accessors
    ("coords-missing-obsm", no_obsm, lambda a, t: st.get.spatial_coords(a), KeyError, r"`adata.obsm\['spatial'\]` not found"),
    ("crops-missing-obsm", no_obsm, lambda a, t: st.get.spot_crops(a), KeyError, r"obsm\['spatial'\]"),
    ("coords-bad-shape", bad_obsm_shape, lambda a, t: st.get.spatial_coords(a), ValueError, r"\(n_obs, 2\) array"),
    ("coords-nan", nan_coords, lambda a, t: st.get.spot_crops(a), ValueError, "NaN or infinite coordinates"),
    ("library-missing-uns", no_uns, lambda a, t: st.get.library_id(a), KeyError, r"`adata.uns\['spatial'\]` is missing or empty"),
    ("library-empty-uns", empty_uns, lambda a, t: st.get.library_id(a), KeyError, r"`adata.uns\['spatial'\]` is missing or empty"),
    ("image-missing-uns", no_uns, lambda a, t: st.get.image(a), KeyError, "missing or empty.*st.read_visium"),
    ("crops-missing-uns", no_uns, lambda a, t: st.get.spot_crops(a), KeyError, "missing or empty"),
    ("library-unknown", same, lambda a, t: st.get.library_id(a, "lib2"), KeyError, r"`library_id='lib2'` not found.*\['synthetic'\]"),
    ("scalef-unknown-library", same, lambda a, t: st.get.scale_factor(a, "lib2"), KeyError, "not found"),
    ("library-type", same, lambda a, t: st.get.library_id(a, 2), TypeError, "`library_id` must be a string"),
    ("library-ambiguous", two_libraries, lambda a, t: st.get.library_id(a), ValueError, r"several libraries \['synthetic', 'other'\]"),
    ("crops-ambiguous", two_libraries, lambda a, t: st.get.spot_crops(a), ValueError, "several libraries.*pass `library_id=` to pick one"),
    ("img-key-unknown", same, lambda a, t: st.get.image(a, img_key="fullres"), KeyError, r"`img_key='fullres'` not found.*\['hires', 'lowres'\]"),
    ("image-none", no_images, lambda a, t: st.get.image(a), KeyError, "no H&E image"),
    ("scalef-missing", no_scalef, lambda a, t: st.get.scale_factor(a), KeyError, "tissue_hires_scalef.*scalefactors_json"),
    ("scalef-negative", negative_scalef, lambda a, t: st.get.spot_crops(a), ValueError, "must be a positive number"),
    ("diameter-missing", no_diameter, lambda a, t: st.get.spot_diameter(a), KeyError, "spot_diameter_fullres"),
    ("crops-spot-scale-0", same, lambda a, t: st.get.spot_crops(a, spot_scale=0), ValueError, "`spot_scale` must be a positive number"),
    ("crops-spot-scale-str", same, lambda a, t: st.get.spot_crops(a, spot_scale="big"), ValueError, "`spot_scale`"),
    ("crops-unknown-spot", same, lambda a, t: st.get.spot_crops(a, obs_names=["nope"]), KeyError, r"not in `adata.obs_names`, e.g. \['nope'\]"),
    ("coords-not-anndata", same, lambda a, t: st.get.spatial_coords(a.X), TypeError, "must be an AnnData"),
    # st.read_visium
    ("read-missing-folder", same, lambda a, t: st.read_visium(t / "nope"), FileNotFoundError, "Visium folder.*nope.*not found"),
    ("read-empty-folder", same, lambda a, t: st.read_visium(t), FileNotFoundError, r"Count file.*filtered_feature_bc_matrix\.h5.*not found"),
    ("read-path-type", same, lambda a, t: st.read_visium(None), TypeError, "`path` must be a folder path"),
    ("read-library-type", same, lambda a, t: st.read_visium(t, library_id=""), TypeError, "`library_id`"),
    # datasets
    ("synthetic-few-spots", same, lambda a, t: st.datasets.synthetic_visium(5), ValueError, "`n_spots` must be >= 10, got 5"),
    ("synthetic-float-spots", same, lambda a, t: st.datasets.synthetic_visium(10.5), TypeError, "`n_spots` must be an integer"),
    ("synthetic-few-genes", same, lambda a, t: st.datasets.synthetic_visium(100, 3), ValueError, "`n_genes` must be >= 8"),
    ("synthetic-domains", same, lambda a, t: st.datasets.synthetic_visium(n_domains=9), ValueError, "`n_domains` must be at most 5"),
    ("synthetic-depth", same, lambda a, t: st.datasets.synthetic_visium(mean_depth=0), ValueError, "`mean_depth`"),
    ("synthetic-seed", same, lambda a, t: st.datasets.synthetic_visium(random_state=-1), TypeError, "`random_state`"),
    ("dlpfc-section", same, lambda a, t: st.datasets.dlpfc("151507"), ValueError, r"`section` must be one of \['151673', '151674', '151675'\]"),
    # st.settings
    ("settings-device", same, lambda a, t: setattr(st.settings, "device", "gpu"), ValueError, r"`settings\.device` must be 'auto'.*got 'gpu'"),
    ("settings-device-index", same, lambda a, t: setattr(st.settings, "device", "cuda:a"), ValueError, r"`settings\.device`"),
    ("settings-verbosity", same, lambda a, t: setattr(st.settings, "verbosity", 9), ValueError, r"`settings\.verbosity`"),
    ("settings-verbosity-name", same, lambda a, t: setattr(st.settings, "verbosity", "loud"), ValueError, r"`settings\.verbosity`"),
    ("settings-progress", same, lambda a, t: setattr(st.settings, "progress_bar", "no"), TypeError, r"`settings\.progress_bar`"),
    # keys: "/" cannot be read back from h5ad; "spatial" would replace the images, scale factors or positions
    ("holdout-key-slash", same, lambda a, t: holdout(a, key_added="a/b"), ValueError, "contains '/'"),
    ("holdout-key-spatial", same, lambda a, t: holdout(a, key_added="spatial"), ValueError, r"would replace `adata.uns\['spatial'\]`"),
    ("impute-key-spatial", held_out, lambda a, t: impute(a, "knn", layer="holdout_train", key_added="spatial"), ValueError, r"would replace `adata.uns\['spatial'\]`"),
    ("impute-key-slash", held_out, lambda a, t: impute(a, "knn", layer="holdout_train", key_added="knn/1"), ValueError, "contains '/'"),
    ("smooth-key-spatial", same, lambda a, t: st.pp.spatial_smooth(a, key_added="spatial"), ValueError, r"would replace `adata.uns\['spatial'\]`"),
    ("smooth-key-slash", same, lambda a, t: st.pp.spatial_smooth(a, key_added="a/b"), ValueError, "contains '/'"),
    ("clusters-key-spatial", same, lambda a, t: compare(a, ["X"], key_added="spatial"), ValueError, r"would replace `adata.uns\['spatial'\]`"),
    ("features-key-spatial", same, lambda a, t: features(a, key_added="spatial"), ValueError, r"or `adata.obsm\['spatial'\]`"),
    ("holdout-nested-default-key", held_out, lambda a, t: holdout(a, 0.2, layer="holdout_train"), ValueError, r"would overwrite the input `layer='holdout_train'`"),
    ("holdout-min-spot-fraction-none", same, lambda a, t: holdout(a, 0.2, strategy="gene_folds", min_spot_fraction=None), TypeError, "`min_spot_fraction` must be a number"),
    ("features-generator-seed", same, lambda a, t: features(a, random_state=np.random.default_rng(0)), TypeError, "`random_state` must be a non-negative integer or None"),
    # impute: outputs never replace inputs or other functions' records; flags are booleans; seeds fit every library
    ("impute-key-is-layer", held_out, lambda a, t: impute(a, "knn", layer="holdout_train", key_added="holdout_train"), ValueError, "would overwrite an input of this imputation"),
    ("impute-key-is-holdout", held_out, lambda a, t: impute(a, "knn", layer="holdout_train", key_added="holdout"), ValueError, r"would overwrite `adata.uns\['holdout'\]`, which no imputation wrote"),
    ("impute-key-is-user-layer", held_out, lambda a, t: impute(a, "knn", layer="holdout_train", key_added="imputed"), ValueError, r"would overwrite `adata.layers\['imputed'\]`"),
    ("impute-key-is-image-key", image_features, lambda a, t: impute(a, "image", key_added="X_image", max_epochs=1), ValueError, "would overwrite an input"),
    ("impute-keep-observed-str", held_out, lambda a, t: impute(a, "knn", layer="holdout_train", keep_observed="False"), TypeError, "`keep_observed` must be True or False or None"),
    ("impute-copy-str", held_out, lambda a, t: impute(a, "knn", layer="holdout_train", copy="no"), TypeError, "`copy` must be True or False"),
    ("impute-return-model-str", held_out, lambda a, t: impute(a, "autoencoder", layer="holdout_train", return_model="no"), TypeError, "`return_model` must be True or False"),
    ("impute-progress-str", held_out, lambda a, t: impute(a, "autoencoder", layer="holdout_train", progress="yes"), TypeError, "`progress` must be True or False or None"),
    ("impute-seed-too-large", held_out, lambda a, t: impute(a, "autoencoder", layer="holdout_train", random_state=2**32), ValueError, r"`random_state` must be at most 2\*\*32 - 1"),
    ("impute-val-fraction-str", held_out, lambda a, t: impute(a, "autoencoder", layer="holdout_train", val_fraction="0.2"), TypeError, "`val_fraction` must be a number"),
    ("impute-mask-fraction-none", held_out, lambda a, t: impute(a, "autoencoder", layer="holdout_train", mask_fraction=None), TypeError, "`mask_fraction` must be a number"),
    ("impute-modalities-none", held_out, lambda a, t: impute(a, "multimodal", layer="holdout_train", modalities=None), TypeError, "`modalities` must be a modality name or a list"),
    ("impute-one-gene", lambda a: a[:, :1].copy(), lambda a, t: impute(a, "multimodal", max_epochs=1), ValueError, r"has 1 gene\(s\)"),
    ("load-model-none", same, lambda a, t: st.tl.load_model(None), TypeError, "`dirname` must be a folder path"),
    # typos: the closest existing names are suggested (difflib)
    ("typo-layer", held_out, lambda a, t: evaluate(a, "imputd"), KeyError, r"Did you mean 'imputed'\?"),
    ("typo-holdout-layer", held_out, lambda a, t: compare(a, ["holdout_trian"]), KeyError, r"not found \(`layers`\).*Did you mean 'holdout_train'"),
    ("typo-impute-layer", held_out, lambda a, t: impute(a, "knn", layer="Holdout-Train"), KeyError, r"Did you mean 'holdout_train'\?"),
    ("typo-method", same, lambda a, t: impute(a, "multimodel"), ValueError, r"got 'multimodel'\. Did you mean 'multimodal'\?"),
    ("typo-cluster-method", same, lambda a, t: compare(a, ["X"], method="leidn"), ValueError, r"Did you mean 'leiden'\?"),
    ("typo-labels-key", same, lambda a, t: compare(a, ["X"], labels_key="domian"), KeyError, r"obs\['domian'\]` not found \(`labels_key`\).*Did you mean 'domain'\?"),
    ("typo-library-key", same, lambda a, t: compare(a, ["X"], library_key="domian"), KeyError, r"`library_key=.domian.` is not a column.*Did you mean .domain.\?"),
    ("typo-obsm-key", image_features, lambda a, t: compare(a, ["X_imgae"]), KeyError, r"Did you mean 'X_image'\?"),
]  # fmt: skip


def test_layer_typo_does_not_suggest_holdout(synthetic):
    """A holdout layer present under another spelling is suggested; running `st.pp.holdout` is suggested only
    when no holdout layer is close."""
    held_out(synthetic)
    with pytest.raises(KeyError) as err:
        evaluate(synthetic, "holdout_trian")
    assert "Did you mean 'holdout_train'" in str(err.value) and "st.pp.holdout" not in str(err.value)
    fresh = synthetic[:, :].copy()
    for key in ("holdout_train", "holdout_test"):
        del fresh.layers[key]
    with pytest.raises(KeyError, match=r"Run `st.pp.holdout\(adata\)` first") as err:
        st.tl.compare_clusters(fresh, ["holdout_train"])
    assert "Did you mean" not in str(err.value)


def _dense(M) -> np.ndarray:
    return M.toarray() if sparse.issparse(M) else np.asarray(M)


def _nested_keys(mapping) -> dict:
    return {k: sorted(v.keys()) if isinstance(v, dict) else None for k, v in mapping.items()}


def _snapshot(adata: ad.AnnData) -> dict:
    """Copies of every value a failed call must leave alone (the data are small: 200 spots x 50 genes)."""
    return {
        "shape": adata.shape,
        "X": _dense(adata.X).copy(),
        "X_dtype": adata.X.dtype,
        "layers": {k: _dense(v).copy() for k, v in adata.layers.items()},
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "obsm": {k: _dense(v).copy() for k, v in adata.obsm.items()},
        "uns": _nested_keys(adata.uns),
        "settings": (st.settings.device, st.settings.verbosity, st.settings.progress_bar, st.settings.datadir),
    }


def _assert_same(after: dict, before: dict) -> None:
    assert after["shape"] == before["shape"]
    np.testing.assert_array_equal(after["X"], before["X"])  # NaN-aware
    assert after["X_dtype"] == before["X_dtype"]
    for key in ("layers", "obsm"):
        assert list(after[key]) == list(before[key]), key
        for name, value in before[key].items():
            assert after[key][name].dtype == value.dtype, f"{key}[{name!r}]"
            np.testing.assert_array_equal(after[key][name], value, err_msg=f"{key}[{name!r}]")
    for key in ("obs", "var"):  # column names, order, dtypes, index and values (NaN-aware)
        pd.testing.assert_frame_equal(after[key], before[key], obj=key)
    for key in ("uns", "settings"):
        assert after[key] == before[key], key


def test_table_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("setup", "call", "error", "match"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input(synthetic, tmp_path, setup, call, error, match):
    adata = setup(synthetic)
    before = _snapshot(adata)
    with pytest.raises(error, match=match):
        call(adata, tmp_path)
    _assert_same(_snapshot(adata), before)


def _change_obs_value(a):
    a.obs.loc[a.obs_names[0], "array_row"] += 1


def _change_obsm_value(a):
    a.obsm["spatial"][0, 0] += 1.0


def _change_layer_value(a):
    a.layers["holdout_train"].data[0] += 1


def _change_x_value(a):
    a.X.data[0] += 1


def _change_var_value(a):
    a.var.loc[a.var_names[0], "marker_of"] = "D0" if a.var["marker_of"].iloc[0] != "D0" else "D1"


@pytest.mark.parametrize(
    "change", [_change_obs_value, _change_obsm_value, _change_layer_value, _change_x_value, _change_var_value]
)
def test_snapshot_sees_changed_values(synthetic, change):
    """The comparison of the table above catches a changed value, not only a changed key."""
    held_out(synthetic)
    before = _snapshot(synthetic)
    _assert_same(_snapshot(synthetic), before)
    change(synthetic)
    with pytest.raises(AssertionError):
        _assert_same(_snapshot(synthetic), before)


def test_evaluate_accepts_min_gene_entries_one(synthetic):
    """The lower bound of the check: every gene with one hidden entry or more is kept (no error)."""
    held_out(synthetic)
    scores = evaluate(synthetic, "imputed", min_gene_entries=1, baselines=False)
    assert list(scores.index) == ["imputed"]
    assert np.isfinite(scores.loc["imputed", "median_gene_pearson"])
