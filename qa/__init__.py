"""qa: answers from your documents, with checked citations.

from qa import Assistant
answer = Assistant(corpus="docs").ask("What changed in 2023?")
"""

from qa.api import Assistant
from qa.types import Answer, Chunk, Citation

__all__ = ["Answer", "Assistant", "Chunk", "Citation"]
