"""Stage two: a Llama-architecture causal LM ranks the retriever's candidates through a letter verbalizer."""
