# stacks/slirp: the libslirp recipe, build/stacks/slirp-http (included by the
# Makefile). Debian packages: libslirp-dev pkg-config (and libglib2.0-dev, for
# pkg-config only: Debian's slirp.pc says "Requires: glib-2.0" although
# libslirp.h includes nothing of glib and libslirp-dev does not depend on it;
# without it we fall back to the package's paths).

BUILD        ?= build
SLIRP_PC     := $(shell pkg-config --cflags --libs slirp 2>/dev/null || echo -I/usr/include/slirp -lslirp)
SLIRP_WARN   ?= -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-missing-field-initializers

$(BUILD)/stacks/slirp-http: stacks/slirp/server.c stacks/slirp/build.mk
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -std=c11 -D_GNU_SOURCE $(SLIRP_WARN) $< -o $@ $(SLIRP_PC)
