import io

from loader.log import Logger, format_line


def test_logfmt_quoting() -> None:
    line = format_line(
        "info",
        "bundle",
        {
            "file": "/x/a b.tar",
            "names": ["a:1", "b:2"],
            "bytes": 12,
            "seconds": 0.5,
            "ok": True,
            "err": 'say "hi"',
        },
    )
    assert line.startswith("time=") and line.endswith('err="say \\"hi\\""')
    assert (
        ' level=info msg=bundle file="/x/a b.tar" names=a:1,b:2 bytes=12 seconds=0.500 ok=true '
        in line
    )


def test_one_line_per_event_even_with_newlines() -> None:
    out = io.StringIO()
    Logger(out).error("bundle", error="first\nsecond")
    text = out.getvalue()
    assert text.count("\n") == 1 and 'error="first\\nsecond"' in text
