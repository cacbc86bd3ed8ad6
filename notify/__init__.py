"""Who runs a source and how to tell them: abuse contacts (operator overrides, Abusix's contact zone,
RDAP), forward-confirmed reverse DNS, cached in the store."""
