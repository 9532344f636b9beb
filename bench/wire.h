/*
 * bench/wire.h: what bench/floor.c and bench/limit.c share to speak TCP over
 * raw Ethernet frames with no library: the Lab's addresses and port, header
 * sizes and flags, checksums, big-endian fields, draining the kernel's
 * listener, a MAC argument and the clock.
 */
#ifndef BENCH_WIRE_H
#define BENCH_WIRE_H

#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DPORT 8080
#define ETH 14
#define IP4 20
#define TCP_F 0x01
#define TCP_S 0x02
#define TCP_R 0x04
#define TCP_A 0x10

static const uint8_t us[4] = { 192, 0, 2, 2 }, peer[4] = { 192, 0, 2, 1 };

static uint32_t sum16(const uint8_t *p, size_t len, uint32_t sum)
{
	for (; len > 1; p += 2, len -= 2)
		sum += (uint32_t)(p[0] << 8 | p[1]);
	if (len)
		sum += (uint32_t)(p[0] << 8);
	return sum;
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static void drain(int listen_fd)
{
	int fd;
	while ((fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK)) >= 0)
		close(fd);
}

static int mac_arg(const char *text, uint8_t mac[6])
{
	unsigned v[6];
	if (sscanf(text, "%2x%2x%2x%2x%2x%2x", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5]) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	return 0;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

#endif
