"""The on-device LLM as its own process: the ``llm`` node (Advise action server), its config, and the
check that the installed llama.cpp can execute on this CPU. The engine, backends, prompt and case
memory it serves live in ``fatigue_llm.intervention`` (imported lazily: the ``intervention`` node,
the safety path, never loads model code)."""
