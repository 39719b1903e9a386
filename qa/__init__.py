"""qa: answers from your documents, with checked citations.

from qa import Assistant
answer = Assistant(corpus="docs").ask("What changed in 2023?")
"""

import logging

from qa.api import Assistant
from qa.types import Answer, Chunk, Citation

__all__ = ["Answer", "Assistant", "Chunk", "Citation"]

# A library logs; the application decides where it goes. Without this, Python prints qa's warnings on stderr,
# where the CLI promises one `error:` line (configure logging, e.g. logging.basicConfig(), to see them).
logging.getLogger("qa").addHandler(logging.NullHandler())
