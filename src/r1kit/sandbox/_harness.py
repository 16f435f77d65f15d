"""Function-call test harness, run inside the sandbox as
``python -I -X utf8 _harness.py CODE_PATH FN_NAME`` with the JSON list of arguments on stdin.

It loads the program as module ``solution`` (so an ``if __name__ == "__main__":`` block does not
run), finds ``FN_NAME`` (a top-level function, or a method of a ``Solution`` class as in
LeetCode-style data), calls it and writes ``json.dumps(result)`` as one line on the original
stdout. The program's own prints go to /dev/null. Expected outputs never enter the sandbox: the
parent compares.
"""

import json
import os
import sys
import traceback


def _jsonable(x, depth=0):
    if depth > 100:
        raise ValueError("result nested too deeply")
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in x.items()}
    if isinstance(x, (set, frozenset)):
        return sorted((_jsonable(v, depth + 1) for v in x), key=repr)
    return repr(x)


def main():
    code_path, fn_name = sys.argv[1], sys.argv[2]
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    args = json.loads(sys.stdin.read() or "[]")
    if not isinstance(args, list):
        args = [args]
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    with open(code_path, encoding="utf-8") as f:
        src = f.read()
    mod = type(sys)("solution")
    mod.__file__ = code_path
    sys.modules["solution"] = mod
    try:
        exec(compile(src, code_path, "exec"), mod.__dict__)
        fn = mod.__dict__.get(fn_name)
        if not callable(fn) and isinstance(mod.__dict__.get("Solution"), type):
            fn = getattr(mod.__dict__["Solution"](), fn_name, None)
        if not callable(fn):
            sys.stderr.write("harness: no function named %r\n" % fn_name)
            os._exit(3)
        result = fn(*args)
        line = json.dumps(_jsonable(result))
    except BaseException:  # noqa: BLE001 - SystemExit included: exiting is not an answer
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    out.write(line + "\n")
    out.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
