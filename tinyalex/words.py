"""Wording the commands' messages share."""


def plural(count, word, words=None) -> str:
    """"1 epoch", "3 epochs", "2 batches": `count` and `word`, or its plural `words` (default:
    word + "s") unless the count is 1."""
    return f"{count} {word if count == 1 else words or word + 's'}"
