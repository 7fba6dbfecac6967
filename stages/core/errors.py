"""The project's own errors: one line, naming the file or parameter at fault."""


class PipelineError(Exception):
    """Base class: anything the user can fix by changing an input."""


class DataError(PipelineError):
    """A raw or prepared data file is missing, corrupt, hostile or of the wrong shape."""


class ConfigError(PipelineError):
    """params.yaml is invalid (unknown key, wrong type, out-of-range value, missing name)."""
