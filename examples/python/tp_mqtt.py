"""TP ARNG, Activité 2 : un capteur température/humidité simulé, écrit comme le TP le
demande (paho-mqtt, ``SensorConfig``, ``SensorSimulator.compute_payload``), pour
comparer avec ``arng simulate``. La logique est ici, pure et testable ; ``sensor.py``
ne fait que lire la configuration et lancer la boucle (question « où placer la
logique ? »).

A student's sensor, written the lab's way. `arng ingest` accepts what it publishes,
including the other forms students commonly write (``FORMS``), and counts each
non-standard form in ``arng_ingest_normalized_total`` (docs/data-model.md).
"""

import json
import math
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import paho.mqtt.client as mqtt


@dataclass
class SensorConfig:
    """Un capteur d'une zone : où il publie et ce qu'il mesure."""

    zone: str                      # nord, sud, est
    sensor: str = "th1"            # le <capteur> du topic entrepot/<zone>/<capteur>/v1
    base_temp: float = 18.0        # °C autour desquels la mesure oscille
    base_hum: float = 45.0         # % HR
    warning_high: float = 25.0     # seuils de docs/data-model.md (les défauts d'arng)
    critical_high: float = 30.0
    qos: int = 1                   # mesures : QoS 1, non retenues
    seed: int = 0

    @property
    def topic(self) -> str:
        return f"entrepot/{self.zone}/{self.sensor}/v1"


def lab_payload(ts, temp, hum, level):
    """The form the lab asks for: timestamp, temp, hum, alert_level, version."""
    return {"timestamp": datetime.fromtimestamp(ts, timezone.utc).isoformat(),
            "temp": temp, "hum": hum, "alert_level": level, "version": 1}


# Forms other students write (issue 14). `--form all` cycles through them; arng reads
# each one (liberal in form) and `--strict-payload` would refuse all but "lab".
FORMS = {
    "lab": lab_payload,
    "string_version": lambda ts, t, h, l: {"version": "1", "timestamp": ts,
                                           "temp": t, "hum": h, "alert_level": l.upper()},
    "naive_iso": lambda ts, t, h, l: {"version": "1.0", "temp": t, "hum": h,
                                      "timestamp": datetime.utcfromtimestamp(ts).isoformat(),
                                      "alert_level": ["normal", "warning", "critical"].index(l)},
    "epoch_ms": lambda ts, t, h, l: {"version": 1, "timestamp": int(ts * 1000),
                                     "temp": t, "hum": h, "alert_level": l},
    "no_level": lambda ts, t, h, l: {"version": 1, "timestamp": ts, "temp": t, "hum": h},
    "no_timestamp": lambda ts, t, h, l: {"temp": t, "hum": h, "alert_level": l},
}


class SensorSimulator:
    """Publie les mesures d'un ou plusieurs capteurs, et le heartbeat de leurs zones."""

    def __init__(self, client, configs, form="lab", heartbeat_period=30.0):
        self.client = client
        self.configs = configs
        self.form = form
        self.heartbeat_period = heartbeat_period
        self.rngs = {c.topic: random.Random(c.seed) for c in configs}
        self.count = 0
        self._stop = threading.Event()

    def compute_payload(self, config, now=None):
        """Une mesure : sinusoïde lente + bruit, et alert_level calculé localement."""
        now = time.time() if now is None else now
        rng = self.rngs[config.topic]
        temp = round(config.base_temp + 3 * math.sin(now / 600) + rng.gauss(0, 0.3), 2)
        hum = round(min(100.0, max(0.0, config.base_hum + rng.gauss(0, 1.0))), 2)
        level = ("critical" if temp >= config.critical_high
                 else "warning" if temp >= config.warning_high else "normal")
        names = list(FORMS) if self.form == "all" else [self.form]
        return FORMS[names[self.count % len(names)]](now, temp, hum, level)

    def publish_readings(self):
        """Un cycle complet : une mesure par capteur ; attend l'accusé QoS 1 du broker."""
        for c in self.configs:
            payload = json.dumps(self.compute_payload(c))
            self.client.publish(c.topic, payload, qos=c.qos).wait_for_publish()
            print("PUBLISH", c.topic, payload, flush=True)
        self.count += 1

    def publish_heartbeats(self):
        """Le heartbeat du TP, tel quel : retenu, QoS 0, sur entrepot/heartbeat/<zone>."""
        for zone in sorted({c.zone for c in self.configs}):
            hb_payload = json.dumps({"zone": zone, "timestamp": time.time()})
            self.client.publish(f"entrepot/heartbeat/{zone}", hb_payload, qos=0,
                                retain=True).wait_for_publish()
            print("HEARTBEAT", zone, hb_payload, flush=True)

    def start_heartbeat(self):
        """Un vrai minuteur (le `int(time.time()) % 30 == 0` du TP rate des secondes
        quand la boucle dort plus d'une seconde) : tout de suite, puis toutes les 30 s."""
        def loop():
            while not self._stop.is_set():
                self.publish_heartbeats()
                self._stop.wait(self.heartbeat_period)
        threading.Thread(target=loop, daemon=True).start()

    def stop(self):
        self._stop.set()


def connect(host, port, username, password, client_id):
    """Un client paho-mqtt connecté (paho 1.x et 2.x)."""
    try:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    except AttributeError:  # paho-mqtt 1.x (Debian 12's python3-paho-mqtt)
        client = mqtt.Client(client_id=client_id)
    if username:
        client.username_pw_set(username, password)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    return client
