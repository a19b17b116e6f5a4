"""A plugin whose import fails, as one with a missing dependency does."""

import scorepack_no_such_dependency  # noqa: F401  (fails: this module does not exist)
