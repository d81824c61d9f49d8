"""``python -m cotbench.backends.llamacpp_server [llama_cpp.server args]``: llama-cpp-python's
OpenAI-compatible server with the same CPU buffer settings as the in-process backend
(see :func:`cotbench.backends.llamacpp.disable_extra_buffer_types`), so both give the same outputs."""
import runpy

from cotbench.backends.llamacpp import disable_extra_buffer_types

if __name__ == "__main__":
    disable_extra_buffer_types()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
