# Run by llama.cpp's own project() call when `make setup` compiles llama-cpp-python from source
# (CMAKE_ARGS in the Makefile names this file). llama-cpp-python switches on llama.cpp's
# "common" library, the helpers of llama.cpp's command-line tools, which it neither installs
# nor loads; it is half of the build. Quorum's embedded server needs libllama and libggml only.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library" FORCE)
