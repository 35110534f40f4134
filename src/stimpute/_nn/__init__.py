"""The torch layer of stimpute: arrays and typed options in, trained networks and arrays out.

Nothing here reads or writes an AnnData (``stimpute.tl._model.ImputationModel`` above it does), and nothing
outside this subpackage imports torch at module level; ``import stimpute`` never imports it.

``_config``      ``NETWORK_DEFAULTS`` (the network's default sizes) and ``TrainingOptions`` (no torch import)
``_module``      ``ImputeNet``: one encoder per modality, weighted-sum fusion, gene decoder; ``build_net(config)``
``_data``        input preparation: ``prepare`` (normalisation, neighbour features, validation split) and ``batch``
``_losses``      squared error on ``log1p`` values and the count likelihoods
``_train``       the training loop (masked minibatches, validation, early stopping)
``_predict``     readouts of a trained network (conditional, expected, depth-normalised counts)
``_fit``         ``fit_network``: seed, prepare, build, initialise and train in one call
``_device``      device resolution, float32 default and isolated random state
``_checkpoint``  reading (``weights_only=True``) and writing state dicts
``_encoders``    the CNN image encoders of ``st.pp.image_features``

A new modality (e.g. a graph encoder) adds its encoder to ``_module``, its inputs to ``_data.prepare`` /
``_data.batch``, its name to ``stimpute._constants.MODALITIES`` and its defaults to ``_config.NETWORK_DEFAULTS``.
"""
