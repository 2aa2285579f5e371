# Build and install receipt-exporter where the shipped units and crontab expect it
# (/usr/local/bin/receipt-exporter, /etc/receipt-exporter/jobs). See README.md, "Install".
#
#   make                 the release binary: target/release/receipt-exporter
#   make install         the binary, the job files (an existing one is kept) and the docs
#   make install-units   the systemd units and timers into /etc/systemd/system, the metrics
#                        group and directory, the Prometheus alert rules into the docs
#   make verify-units    systemd-analyze verify on the installed units
#
# The units name /usr/local/bin/receipt-exporter: keep PREFIX=/usr/local, or edit ExecStart=.
# DESTDIR stages everything under another root (packaging).

PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
BIN := target/release/receipt-exporter
UNITS := receipt-exporter-hourly.service receipt-exporter-hourly.timer \
	receipt-exporter-scheduler.service receipt-exporter-listen.service \
	receipt-exporter-alert@.service
UNIT_DIR := $(DESTDIR)/etc/systemd/system
DOC_DIR := $(DESTDIR)/usr/share/doc/receipt-exporter
JOBS_DIR := $(DESTDIR)/etc/receipt-exporter/jobs

.PHONY: all build install install-units verify-units

all: build

# Cargo decides what to rebuild: always ask it.
build:
	$(CARGO) build --release --locked

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/receipt-exporter
	install -d -m 0755 $(JOBS_DIR)
	for f in jobs/*.toml; do \
		[ -e "$(JOBS_DIR)/$${f##*/}" ] || install -m 0644 "$$f" "$(JOBS_DIR)/"; \
	done
	install -D -m 0644 README.md $(DOC_DIR)/README.md
	install -D -m 0644 jobs/README.md $(DOC_DIR)/jobs/README.md

# The units write their metrics file into node_exporter's textfile directory as the group
# receipt-exporter-metrics (see the hourly unit): the group is created and the directory made
# writable for it (setgid, 2775).
METRICS_DIR := $(DESTDIR)/var/lib/prometheus/node-exporter
METRICS_GROUP := receipt-exporter-metrics

install-units:
	install -d -m 0755 $(UNIT_DIR)
	for u in $(UNITS); do install -m 0644 "jobs/systemd/$$u" "$(UNIT_DIR)/"; done
	getent group $(METRICS_GROUP) >/dev/null || groupadd --system $(METRICS_GROUP)
	install -d -m 2775 -g $(METRICS_GROUP) $(METRICS_DIR)
	install -D -m 0644 jobs/prometheus/alerts.yml $(DOC_DIR)/prometheus/alerts.yml

# The alert template is verified through the units that name it (OnFailure=).
verify-units:
	cd $(UNIT_DIR) && systemd-analyze verify receipt-exporter-hourly.service \
		receipt-exporter-hourly.timer receipt-exporter-scheduler.service \
		receipt-exporter-listen.service
