"""Private torch code of stimpute. Only imported inside functions that train or encode.

Nothing outside this subpackage imports torch.
"""
