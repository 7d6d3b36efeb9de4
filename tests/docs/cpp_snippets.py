#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Keeps the C++ shown in README.md and ARCHITECTURE.md true.

A ```cpp block whose first line is `// <path>` (a file of the project) must be an excerpt of
that file: its chunks, separated by lines that are exactly `// ...`, appear in the file in
that order, verbatim. The file itself is built (and the examples run) by other tests.
Any other block must compile on its own: lines starting with `#include`, `namespace` or
`using` go before a function whose body is the rest.

usage: cpp_snippets.py SOURCE_DIR WORK_DIR CXX INCLUDE_DIR...
"""
import pathlib
import subprocess
import sys

FENCE_OPEN = "```cpp"


def blocks(path):
    lines = path.read_text().splitlines()
    start = None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == FENCE_OPEN:
            start = number
            body = []
        elif start is not None and line.strip() == "```":
            yield start, body
            start = None
        elif start is not None:
            body.append(line)


def check_excerpt(source_dir, where, lines):
    target = source_dir / lines[0][3:].strip()
    if not target.is_file():
        return f"{where}: names {lines[0][3:].strip()}, which is not a file of the project"
    text = target.read_text().splitlines()
    chunks, chunk = [], []
    for line in lines[1:]:
        if line.strip() == "// ...":
            chunks.append(chunk)
            chunk = []
        else:
            chunk.append(line)
    chunks.append(chunk)
    position = 0
    for chunk in filter(None, chunks):
        found = next((i for i in range(position, len(text) - len(chunk) + 1) if text[i:i + len(chunk)] == chunk), None)
        if found is None:
            return f"{where}: this part is not in {target.relative_to(source_dir)} (in order, verbatim):\n  " + "\n  ".join(chunk)
        position = found + len(chunk)
    return None


def check_compiles(where, lines, work_dir, cxx, includes, index):
    prelude = [l for l in lines if l.startswith(("#include", "namespace", "using"))]
    body = [l for l in lines if not l.startswith(("#include", "namespace", "using"))]
    source = work_dir / f"snippet_{index}.cpp"
    source.write_text("\n".join(prelude + ["", "[[maybe_unused]] static void snippet() {"] + body + ["}", ""]))
    command = [cxx, "-std=gnu++20", "-fsyntax-only", "-Wall", "-Werror", "-Wno-unused-variable", "-Wno-unused-but-set-variable",
               "-DUSE_OS_TZDB=1", "-DHAS_STRING_VIEW=1", "-DONLY_C_LOCALE=1"]
    command += [f"-I{i}" for i in includes] + [str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return f"{where}: does not compile ({source}):\n{result.stderr[:3000]}"
    return None


def main():
    source_dir, work_dir, cxx = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
    includes = sys.argv[4:]
    work_dir.mkdir(parents=True, exist_ok=True)
    problems, checked = [], 0
    for name in ("README.md", "ARCHITECTURE.md"):
        for start, lines in blocks(source_dir / name):
            where = f"{name}:{start}"
            checked += 1
            if lines and lines[0].startswith("// ") and "/" in lines[0][3:] and " " not in lines[0][3:].strip():
                problem = check_excerpt(source_dir, where, lines)
            else:
                problem = check_compiles(where, lines, work_dir, cxx, includes, checked)
            print(f"{where}: {'FAILED' if problem else 'ok'}")
            if problem:
                problems.append(problem)
    for problem in problems:
        print(problem, file=sys.stderr)
    if checked == 0:
        print("no ```cpp block found: the README lost its examples?", file=sys.stderr)
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
