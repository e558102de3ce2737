"""The guided tour of knowledge-editing pitfalls: its steps (:mod:`.steps`) and the readers that tell
whether a result shows a step's effect (:mod:`.effects`)."""
