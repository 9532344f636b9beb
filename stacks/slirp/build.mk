# stacks/slirp: the libslirp recipe, build/stacks/slirp-http (included by the
# Makefile). Debian packages: libslirp-dev, and libglib2.0-dev for pkg-config
# alone: Debian's slirp.pc requires glib-2.0, though libslirp.h includes
# nothing of it.

$(BUILD)/stacks/slirp-http: stacks/slirp/server.c stacks/slirp/build.mk
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -std=c11 -D_GNU_SOURCE $(WARN) $$(pkg-config --cflags slirp) $< -o $@ \
	    $$(pkg-config --libs slirp)
