# Run by llama.cpp's own project() call when `make setup` compiles llama-cpp-python from source
# (CMAKE_ARGS in the Makefile names this file). The compile is most of a fresh install's time
# (95 s of 113 s on our 2-core machine), so it builds only what the embedded server runs.

# llama-cpp-python switches on llama.cpp's "common" library, the helpers of llama.cpp's
# command-line tools, which it neither installs nor loads; it is half of the build. Quorum's
# embedded server needs libllama and libggml only.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library" FORCE)

# libllama (model loading, graph building, tokenizing, sampling) at -O1 instead of Release's
# -O3; ggml, where the arithmetic runs, keeps -O3. Side by side on the default model: the
# build took 80 s instead of 95 s, and prompt reading (63-64 tokens/s), generation (13-14
# tokens/s) and model load did not change beyond the noise. -O0 saved 8 s more but tokenized
# 4 times slower. Deferred to the end of the top directory, when the target exists.
function(quorum_libllama_at_o1)
  target_compile_options(llama PRIVATE -O1)
endfunction()
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL quorum_libllama_at_o1)
