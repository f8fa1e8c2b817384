/*
 * fleet-telemetry's Mosquitto 2 plugin, loaded before the dynamic-security plugin.
 *
 * 1. It names the login behind a refused client id. A device's login is "{tenant}/{vehicle}"
 *    and it may connect only with that login as its client id (docs/protocol.md, "Who may do
 *    what"). The dynamic-security plugin refuses any other id, but the broker logs the refusal
 *    with the address alone, so an operator cannot tell which login tried to take whose
 *    session. This plugin refuses those connections itself and logs login, id and address.
 *
 * 2. It holds each device login to a message rate (docs/stream.md, "Fairness"). A PUBLISH
 *    over it is refused with PUBACK 0x87 before it is routed: a flood costs the broker a few
 *    microseconds a message and the stream nothing, and a well-behaved device (`fleet
 *    gateway`) keeps a refused batch and sends it again, so it loses nothing. Every
 *    `summary_interval_s` one line per device counts what was refused. A device that has more
 *    than a whole bucket's worth refused within one such interval is flooding: it is
 *    disconnected and may not log in again for `flood_cooldown_s`, so it stops costing the
 *    broker (which still has to read and answer every refused PUBLISH).
 *
 * Options (plugin_opt_...): device_messages_per_s (default 50; 0 turns the limit off),
 * burst_s (10: a bucket holds that many seconds of the rate), summary_interval_s (10),
 * flood_cooldown_s (60; 0 never disconnects).
 * Service logins (no '/') are never limited or checked here.
 *
 * Built by `make setup` (deploy/install/broker-plugin.sh); `fleet services up` loads it.
 */

#define _POSIX_C_SOURCE 200809L

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define FIELD_MAX 130 /* a login is at most 64 + 1 + 64 characters */
#define TABLE_SIZE 8192

struct bucket {
	char *login;
	double tokens;
	double stamp;
	unsigned long refused;
	double refused_since;
	bool kick;
	double banned_until;
	struct bucket *next;
};

static mosquitto_plugin_id_t *plugin_id;
static struct bucket *table[TABLE_SIZE];
static double rate_per_s = 50.0;
static double burst_s = 10.0;
static double summary_s = 10.0;
static double cooldown_s = 60.0;
static double last_sweep;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool is_device(const char *login)
{
	return login != NULL && strchr(login, '/') != NULL;
}

/* A sender-controlled string, safe for one log line: printable ASCII, bounded. */
static void printable(char *out, const char *in)
{
	size_t i = 0;

	for(; in != NULL && in[i] != '\0' && i < FIELD_MAX - 1; i++){
		out[i] = (in[i] >= 0x20 && in[i] < 0x7f) ? in[i] : '?';
	}
	out[i] = '\0';
}

static unsigned long hash(const char *s)
{
	unsigned long h = 5381;

	while(*s){
		h = h * 33 + (unsigned char)*s++;
	}
	return h % TABLE_SIZE;
}

/* The login's bucket, made full on first sight; NULL when out of memory (then no limit). */
static struct bucket *bucket_of(const char *login, double now)
{
	unsigned long h = hash(login);
	struct bucket *b;

	for(b = table[h]; b != NULL; b = b->next){
		if(strcmp(b->login, login) == 0){
			return b;
		}
	}
	b = calloc(1, sizeof(*b));
	if(b == NULL){
		return NULL;
	}
	b->login = strdup(login);
	if(b->login == NULL){
		free(b);
		return NULL;
	}
	b->tokens = rate_per_s * burst_s;
	b->stamp = now;
	b->next = table[h];
	table[h] = b;
	return b;
}

static void report(struct bucket *b, double now)
{
	char who[FIELD_MAX];

	printable(who, b->login);
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
			"fleet: device login '%s' over its limit of %g messages/s (burst %g s): "
			"%lu messages refused (PUBACK 0x87) in the last %.0f s",
			who, rate_per_s, burst_s, b->refused, now - b->refused_since);
	b->refused = 0;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *login = ed->username;
	const char *client_id = mosquitto_client_id(ed->client);
	char who[FIELD_MAX], as[FIELD_MAX];

	(void)event;
	(void)userdata;
	if(!is_device(login)){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	if(client_id != NULL && strcmp(client_id, login) == 0){
		struct bucket *b = bucket_of(login, now_s());

		if(b != NULL && b->banned_until > now_s()){
			return MOSQ_ERR_AUTH; /* flooding: logged when it was disconnected */
		}
		return MOSQ_ERR_PLUGIN_DEFER; /* a device as itself: its password is checked next */
	}
	printable(who, login);
	printable(as, client_id);
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
			"fleet: refused device login '%s' connecting as client id '%s' from %s "
			"(a device connects only with its own login as client id)",
			who, as, mosquitto_client_address(ed->client));
	return MOSQ_ERR_AUTH;
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	const char *login = mosquitto_client_username(ed->client);
	double now, cap;
	struct bucket *b;

	(void)event;
	(void)userdata;
	if(rate_per_s <= 0 || !is_device(login)){
		return MOSQ_ERR_SUCCESS;
	}
	now = now_s();
	b = bucket_of(login, now);
	if(b == NULL){
		return MOSQ_ERR_SUCCESS;
	}
	cap = rate_per_s * burst_s;
	b->tokens += (now - b->stamp) * rate_per_s;
	if(b->tokens > cap){
		b->tokens = cap;
	}
	b->stamp = now;
	if(b->tokens >= 1.0){
		b->tokens -= 1.0;
		return MOSQ_ERR_SUCCESS;
	}
	if(b->refused == 0){
		b->refused_since = now;
	}
	b->refused++;
	/* More than a whole burst refused within one summary interval: not a device catching
	 * up (it would wait for its PUBACKs and slow down), a flood. */
	if(cooldown_s > 0 && (double)b->refused > cap){
		b->kick = true; /* disconnected by the next tick, outside this client's own packet */
	}
	return MOSQ_ERR_ACL_DENIED;
}

/* Once a second: report the devices whose summary interval is over. */
static int on_tick(int event, void *event_data, void *userdata)
{
	double now = now_s();

	(void)event;
	(void)event_data;
	(void)userdata;
	if(now - last_sweep < 1.0){
		return MOSQ_ERR_SUCCESS;
	}
	last_sweep = now;
	for(size_t i = 0; i < TABLE_SIZE; i++){
		for(struct bucket *b = table[i]; b != NULL; b = b->next){
			if(b->kick){
				char who[FIELD_MAX];

				b->kick = false;
				b->banned_until = now + cooldown_s;
				printable(who, b->login);
				mosquitto_log_printf(MOSQ_LOG_NOTICE,
						"fleet: device login '%s' disconnected for flooding: more than %g "
						"messages over its limit were refused within %g s; it may log in "
						"again in %g s", who, rate_per_s * burst_s, summary_s, cooldown_s);
				report(b, now);
				mosquitto_kick_client_by_username(b->login, true);
			}else if(b->refused > 0 && now - b->refused_since >= summary_s){
				report(b, now);
			}
		}
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *opts, int opt_count)
{
	int rc;

	(void)userdata;
	for(int i = 0; i < opt_count; i++){
		double value = strtod(opts[i].value, NULL);

		if(strcmp(opts[i].key, "device_messages_per_s") == 0 && value >= 0){
			rate_per_s = value;
		}else if(strcmp(opts[i].key, "burst_s") == 0 && value >= 1){
			burst_s = value;
		}else if(strcmp(opts[i].key, "summary_interval_s") == 0 && value > 0){
			summary_s = value;
		}else if(strcmp(opts[i].key, "flood_cooldown_s") == 0 && value >= 0){
			cooldown_s = value;
		}else{
			mosquitto_log_printf(MOSQ_LOG_ERR, "fleet: bad plugin option %s = %s",
					opts[i].key, opts[i].value);
			return MOSQ_ERR_INVAL;
		}
	}
	plugin_id = identifier;
	rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_TICK, on_tick, NULL, NULL);
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
			"fleet: plugin loaded (device limit %g messages/s, burst %g s)", rate_per_s, burst_s);
	return rc;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	(void)userdata;
	(void)opts;
	(void)opt_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_TICK, on_tick, NULL);
	for(size_t i = 0; i < TABLE_SIZE; i++){
		struct bucket *b = table[i];

		while(b != NULL){
			struct bucket *next = b->next;

			free(b->login);
			free(b);
			b = next;
		}
		table[i] = NULL;
	}
	return MOSQ_ERR_SUCCESS;
}
