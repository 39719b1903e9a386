"""The errors qa raises. Each carries a message meant for a person; the CLI and UI print it as one line."""


class QAError(Exception):
    """Base class: anything a user can fix or should be told about, never a bug."""


class ConfigError(QAError):
    """A setting has a value we cannot use (names the setting)."""


class CorpusError(QAError):
    """The corpus folder is missing, empty or not a folder."""


class DocumentError(QAError):
    """One file could not be loaded. `source` names it; the ingest skips it and goes on."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class IndexMismatchError(QAError):
    """The index was built with another embedding model or chunking than the one configured."""


class IndexBusyError(QAError):
    """Another process is writing this index."""


class StoreUnavailableError(QAError):
    """The Chroma server cannot be reached."""


class StorageError(QAError):
    """The index folder cannot be used as it is: not a folder, read-only, full disk, damaged (names the path)."""


class GeneratorError(QAError):
    """The answering model failed: missing weights, unreachable endpoint, timeout."""


class QuestionError(QAError):
    """The question cannot be asked as given (empty, too long)."""
