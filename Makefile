# Shortcuts for the README commands (install.sh does the installing).
.PHONY: install demo test teacher eval

install:
	bash install.sh

demo: install
	.venv/bin/edgemm demo

test: install
	.venv/bin/python -m pytest

eval:
	.venv/bin/edgemm reference eval

teacher:
	.venv/bin/edgemm reference train --out converters/reference
