"""keyfer's exception types. The CLI turns each into one line and a non-zero exit code."""


class KeyferError(Exception):
    """Base class for errors a user can act on."""


class ImageReadError(KeyferError):
    """An input file is missing, empty, not an image or cannot be decoded."""


class WeightsError(KeyferError):
    """A shipped or given weight file is missing, corrupt or does not match its record."""
