# Shortcuts for the README commands (install.sh does the installing).
.PHONY: install demo test teacher eval

install:
	bash install.sh

demo: install
	.venv/bin/python -m examples.av_digits demo

test: install
	.venv/bin/python -m pytest

eval:
	.venv/bin/python -m examples.av_digits eval

teacher:
	.venv/bin/python -m examples.av_digits train --out examples/av_digits
