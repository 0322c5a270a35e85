"""The one exception type for errors a user can cause."""


class DetectionError(Exception):
    """Bad user input: a missing file, malformed annotation, unknown class, corrupt image.

    The message names the file (and the entry, where there is one) and says how to fix it;
    tools print it on one line and exit with status 2.
    """
