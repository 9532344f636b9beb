# stacks/lwip: the lwIP recipe, build/stacks/lwip-http (included by the
# Makefile). Debian package: liblwip-dev (liblwip.so with the unix port).

$(BUILD)/stacks/lwip-http: stacks/lwip/server.c stacks/lwip/build.mk
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -std=gnu11 $(WARN) $$(pkg-config --cflags lwip) $< -o $@ \
	    $$(pkg-config --libs lwip) -pthread
