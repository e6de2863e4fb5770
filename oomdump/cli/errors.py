"""The CLI's exit codes and the one error type that carries them to `main`."""

OK = 0
NOT_FOUND = 1  # no such dump, an ambiguous name, an output file that exists
USAGE = 2  # bad flags or values (argparse exits 2 too)
NOT_A_PROFILE = 3  # the dump is not a heap profile the bounded reader accepts
STORE = 4  # the store is unusable: missing bucket, credentials, endpoint down, folder absent
NO_GO = 5  # `dumps open`: Go is not installed, or go tool pprof failed
INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0  ok (an empty list is ok)
  1  dump not found or ambiguous, or the output file exists
  2  usage: a bad flag or value
  3  the dump is not a heap profile oomdump can read (the reason is printed), or is
     larger than 64 MiB
  4  the store is unusable: no such bucket or folder, no or wrong credentials, unreachable
  5  dumps open: Go is not installed, or go tool pprof failed"""


class CliError(Exception):
    """A failure the operator can act on: `message` is printed, `code` is the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
