"""qa: answers from your documents, with checked citations."""
