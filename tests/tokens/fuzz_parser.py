"""Fuzz harness (atheris) for the token parser and the page reader.

Run by `test_fuzz.py` for a few seconds; for a longer run:

    cp -r tests/fixtures /tmp/corpus && python tests/tokens/fuzz_parser.py /tmp/corpus -max_total_time=600

Any exception other than the documented failures (`ParseError`, `ScrapeError`) is a crash, and an
input that takes longer than libFuzzer's `-timeout` is a hang.
"""

from __future__ import annotations

import math
import sys

import atheris

with atheris.instrument_imports(include=["exporter"]):
    from exporter.pages.parser import ParseError, parse_samples
    from exporter.tokens.profiles import PROFILES, all_sample_names
    from exporter.tokens.scraper import ScrapeError, read_page

NAMES = all_sample_names()


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        samples = parse_samples(text, NAMES)
    except ParseError as e:
        assert e.line_no >= 1 and e.reason
    else:
        assert all(s.name in NAMES and isinstance(s.value, float) for s in samples)
    for profile in (None, *PROFILES.values()):
        try:
            reading = read_page(text, profile)
        except ScrapeError as e:
            assert e.reason
        else:
            assert all(
                math.isfinite(m.input_tokens) and math.isfinite(m.output_tokens) for m in reading.models
            )


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
