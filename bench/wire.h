/*
 * bench/wire.h: what bench/floor.c and bench/limit.c share to speak TCP over
 * raw Ethernet frames with no library: the Lab's addresses and port, header
 * sizes and flags, checksums, big-endian fields, the frames they send,
 * draining the kernel's listener, a MAC argument and the clock.
 */
#ifndef BENCH_WIRE_H
#define BENCH_WIRE_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
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

#define FRAME_MAX (ETH + IP4 + 24)

/* Build one Ethernet frame of IPv4 and TCP from us to the peer's DPORT (an
 * MSS 1460 option on a SYN, as finprobe's), checksums computed (the veth
 * checks them), into f (FRAME_MAX bytes). Returns the frame's length. */
static size_t build_tcp(uint8_t *f, const uint8_t src_mac[6],
			const uint8_t dst_mac[6], uint16_t sport, uint32_t seq,
			uint32_t ack, uint8_t flags)
{
	size_t tcp_len = flags & TCP_S ? 24 : 20;
	uint8_t *ip = f + ETH, *tcp = ip + IP4;
	memset(f, 0, FRAME_MAX);
	memcpy(f, dst_mac, 6);
	memcpy(f + 6, src_mac, 6);
	put16(f + 12, 0x0800);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(IP4 + tcp_len));
	ip[6] = 0x40; /* DF */
	ip[8] = 64;
	ip[9] = 6;
	memcpy(ip + 12, us, 4);
	memcpy(ip + 16, peer, 4);
	put16(ip + 10, fold(sum16(ip, IP4, 0)));
	put16(tcp, sport);
	put16(tcp + 2, DPORT);
	put32(tcp + 4, seq);
	put32(tcp + 8, flags & TCP_A ? ack : 0);
	tcp[12] = (uint8_t)(tcp_len / 4) << 4;
	tcp[13] = flags;
	put16(tcp + 14, 65535);
	if (flags & TCP_S) {
		tcp[20] = 2;
		tcp[21] = 4;
		put16(tcp + 22, 1460);
	}
	uint32_t pseudo = sum16(ip + 12, 8, 6 + (uint32_t)tcp_len);
	put16(tcp + 16, fold(sum16(tcp, tcp_len, pseudo)));
	return ETH + IP4 + tcp_len;
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
