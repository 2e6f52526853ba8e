# Smooth: `make run` starts the whole system, `make test` runs the whole suite.
# Both set themselves up from nothing (a .venv, the sockjs-client copy the chat server serves,
# npm packages for the JS client tests, and Debian's Chromium for the browser tests).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
JS     := tests/js
JSSTAMP := $(JS)/node_modules/.installed
STATIC := static
STATICSTAMP := $(STATIC)/node_modules/.installed
CHROMIUM := /usr/bin/chromium
USER_ID ?= $(USER)

.PHONY: run test faults venv token service-token bench clean help

help:
	@echo "make run     start Redis, Kafka broker, MongoDB-wire server, presence and chat"
	@echo "make test    set up and run the whole test suite (the fault suite included)"
	@echo "make faults  the fault suite alone, printing its table (var/faults-results.md)"
	@echo "make token USER=5   mint a dev token for user 5"
	@echo "make service-token  the running stack's service token (X-Service-Token)"
	@echo "make bench   run every benchmark scenario, then plot the results (docs/bench/)"
	@echo "python -m app --help   the operator's commands (check, token, rebuild-summaries...)"

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

$(JSSTAMP): $(JS)/package.json
	cd $(JS) && npm install --no-audit --no-fund --loglevel=error
	touch $@

# sockjs-client, served by the chat server itself for SockJS's iframe.html (no CDN).
$(STATICSTAMP): $(STATIC)/package.json
	cd $(STATIC) && npm install --no-audit --no-fund --loglevel=error
	touch $@

# The browser that runs the SockJS iframe transports in the tests (tests/js/browser_sockjs.js).
$(CHROMIUM):
	apt-get update -qq && apt-get install -y -qq chromium

run: venv $(STATICSTAMP)
	$(PY) -m app devstack

test: venv $(JSSTAMP) $(STATICSTAMP) $(CHROMIUM)
	$(PY) -m pytest

faults: venv $(JSSTAMP) $(STATICSTAMP)
	rm -f var/faults-results.md
	$(PY) -m pytest tests/faults -m faults -s -q
	@cat var/faults-results.md

token: venv
	@$(PY) -m app token --user $(USER_ID)

service-token: venv
	@$(PY) -m app service-token

# The peer the fan-out benchmark is compared with: RabbitMQ's Web-STOMP plugin, from Debian.
RABBIT := /usr/lib/rabbitmq/bin/rabbitmq-server

$(RABBIT):
	apt-get update -qq && apt-get install -y -qq rabbitmq-server
	rabbitmq-plugins enable --offline rabbitmq_web_stomp

# Then the plots of the saved results (docs/bench/*.png), also when a scenario failed.
bench: venv $(JSSTAMP) $(RABBIT)
	$(PY) -m bench; status=$$?; $(PY) -m bench plot; exit $$status

clean:
	rm -rf $(VENV) $(JS)/node_modules $(STATIC)/node_modules var .pytest_cache
