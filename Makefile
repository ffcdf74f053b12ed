# xdp-dr: `make` builds, `make test` runs every test, `make demo` shows it working. Each target sets up what it
# needs first (apt packages, npm ci), so a fresh Debian 12 machine needs nothing else. V=1 shows the commands.
.DELETE_ON_ERROR:
.PHONY: all setup build ts bpf test demo bench fuzz clean

Q := $(if $(V),,@)
NODE := node --enable-source-maps

all: build

setup:
	$(Q)scripts/setup.sh

ts: setup
	$(Q)npx tsc -p tsconfig.json

# The clang flags live in one place (loader/src/dataplane/build.ts), which the loader also uses on demand.
bpf: ts
	$(Q)$(NODE) dist/loader/src/dataplane/build.js xdp_dr xdp_min xdp_ref_dr xdp_pass xdp_gen xdp_sink

build: ts bpf

test: build
	$(Q)$(NODE) --test --test-concurrency=1 dist/test/*/*.test.js

# The default set; each kind prints a table and keeps its results under bench-results/. Live runs three times: as
# the benchmark issue sets it (a service without the connection table), at 10,000 flows with the builds cut short
# after each stage (where the frames' time goes), and with the table, whose records cost memory.
bench: build
	$(Q)for kind in micro live control maglev conntable; do bin/xdp-dr bench $$kind || exit 1; echo; done
	$(Q)bin/xdp-dr bench live --flows 10000 --stages && echo
	$(Q)bin/xdp-dr bench live --conn-table --flows 1,10000,100000

demo: build
	$(Q)$(NODE) dist/loader/src/demo.js

clean:
	rm -rf dist build
# A long fuzzing run (1,000,000 frames by default): make fuzz FUZZ_ARGS='--frames 5000000 --seed 7'
fuzz: build
	$(Q)$(NODE) dist/loader/src/fuzz/run.js $(FUZZ_ARGS)
