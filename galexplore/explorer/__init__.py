"""The explorer's application layer, free of Panel: what a browser session may open and do."""
