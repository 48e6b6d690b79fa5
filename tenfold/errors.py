"""The errors the command line turns into one-line messages."""


class TenfoldError(Exception):
    """Something the user can fix: the message says what is wrong and what to do."""


class DataError(TenfoldError):
    """A dataset that is missing, corrupt or not in a layout tenfold reads."""


class DownloadError(DataError):
    """A download that failed, was cut short or did not match its checksum."""


class CheckpointError(TenfoldError):
    """A run directory or checkpoint that cannot be used."""


class ConfigError(TenfoldError):
    """A flag or setting outside its allowed range."""


class CloudError(TenfoldError):
    """A cloud or ssh operation failed; the message says what to do."""
