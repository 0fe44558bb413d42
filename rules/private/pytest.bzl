"""A py_test that runs its sources with pytest."""

def py_pytest(name, srcs, deps = [], args = [], **kwargs):
    """Runs pytest over `srcs` as one Bazel test.

    Args:
      name: the test's name.
      srcs: test modules.
      deps: libraries the tests import.
      args: more pytest arguments.
      **kwargs: common test attributes (data, size, tags, timeout).
    """
    native.py_test(
        name = name,
        srcs = srcs + ["//rules/private:pytest_main.py"],
        main = "//rules/private:pytest_main.py",
        args = ["$(location %s)" % src for src in srcs] + args,
        deps = deps + ["@pypi//:pytest"],
        python_version = "PY3",
        **kwargs
    )
