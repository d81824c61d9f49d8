"""``python -m cotbench.backends.llamacpp_server [llama_cpp.server args]``: llama-cpp-python's
OpenAI-compatible server with the same CPU buffer settings as the in-process backend
and the same fresh context per call (see :mod:`cotbench.backends.llamacpp`), so both give the same outputs."""
import runpy

from cotbench.backends.llamacpp import (
    disable_extra_buffer_types,
    fresh_context_per_call,
)

if __name__ == "__main__":
    disable_extra_buffer_types()
    fresh_context_per_call()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
