# Shorthands for the README commands (dev.py needs only Python 3.11+ and pip).
.PHONY: test demo lint bench
test:
	python3 dev.py test
demo:
	python3 dev.py demo
lint:
	python3 dev.py test -s lint
bench:
	python3 dev.py bench
