"""LLM evaluation backends behind one interface (used by the Refusal Index system; reusable).

* :class:`~trustlab.llm.base.Backend`: ``generate(requests) -> completions``.
* :class:`~trustlab.llm.hf.HFBackend`: a local Hugging Face causal LM (name, path or GGUF file).
* :class:`~trustlab.llm.http.OpenAIChatBackend`: any OpenAI-compatible HTTP endpoint (vLLM,
  llama.cpp server, Ollama, ...), with a timeout and retries.
* :class:`~trustlab.llm.recorded.RecordedBackend`: replays recorded responses from JSONL.
* :class:`~trustlab.llm.store.ResponseStore` + :func:`~trustlab.llm.runner.run_requests`: every
  finished answer is appended to a JSONL file at once, so a crash, server error or timeout loses
  nothing and a rerun resumes where it stopped.
* :mod:`~trustlab.llm.server`: a small OpenAI-compatible server for any backend (tests, demos).

Heavy modules (torch/transformers) are imported only by :mod:`trustlab.llm.hf` and :mod:`trustlab.llm.tiny`.
"""

from trustlab.llm.base import Backend, BackendError, ChatRequest, Completion

__all__ = ["Backend", "BackendError", "ChatRequest", "Completion"]
