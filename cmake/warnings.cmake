# SPDX-License-Identifier: Apache-2.0
# Warnings live in a private interface target that is linked PRIVATE and never exported.
add_library(quartzflow_warnings INTERFACE)
target_compile_options(quartzflow_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wold-style-cast -Wcast-align
  -Wunused -Woverloaded-virtual -Wimplicit-fallthrough
  $<$<BOOL:${QUARTZFLOW_WERROR}>:-Werror>)
