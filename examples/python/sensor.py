"""TP ARNG, services/sensor/main.py : lit la configuration (arguments ou variables
d'environnement) et lance SensorSimulator. Exemple :

    python3 examples/python/sensor.py --zones nord,sud,est \
        --username simulator --password simulator-dev --period 5
"""

import argparse
import os
import sys
import time

from tp_mqtt import FORMS, SensorConfig, SensorSimulator, connect


def main():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default=env("MQTT_HOST", "localhost"))
    p.add_argument("--port", type=int, default=int(env("MQTT_PORT", "1883")))
    p.add_argument("--username", default=env("MQTT_USERNAME"))
    p.add_argument("--password", default=env("MQTT_PASSWORD"))
    p.add_argument("--zones", default=env("ZONES", "nord,sud,est"))
    p.add_argument("--sensor", default=env("SENSOR", "th1"))
    p.add_argument("--base-temp", type=float, default=float(env("BASE_TEMP", "18")),
                   help="°C around which the readings vary (31: a critical zone)")
    p.add_argument("--period", type=float, default=float(env("PERIOD_S", "5")),
                   help="seconds between two readings of a sensor")
    p.add_argument("--heartbeat-period", type=float,
                   default=float(env("HEARTBEAT_PERIOD_S", "30")))
    # A flawed sensor on purpose, for `arng check-lab`'s tests (tests/check_lab.rs): with
    # --no-retain, a wrong --heartbeat-period and --form no_level (no alert_level), the
    # lab's checklist must fail exactly those items.
    p.add_argument("--no-retain", action="store_true",
                   help="publish heartbeats without retain (the lab wants them retained)")
    p.add_argument("--count", type=int, default=0, help="cycles, then exit (0: forever)")
    p.add_argument("--form", default=env("PAYLOAD_FORM", "lab"),
                   choices=["all", *FORMS], help="payload form (all: cycle through them)")
    a = p.parse_args()

    configs = [SensorConfig(zone=z, sensor=a.sensor, base_temp=a.base_temp, seed=i)
               for i, z in enumerate(a.zones.split(","))]
    client = connect(a.host, a.port, a.username, a.password, f"tp-sensor-{os.getpid()}")
    if a.no_retain:
        # The flaw is played here, not in tp_mqtt.py, which keeps the lab's retained
        # heartbeat as the lab writes it: every publish goes out without retain.
        publish = client.publish
        client.publish = lambda topic, payload, qos=0, retain=False: publish(
            topic, payload, qos=qos, retain=False)
    sim = SensorSimulator(client, configs, form=a.form, heartbeat_period=a.heartbeat_period)
    sim.start_heartbeat()
    try:
        while a.count == 0 or sim.count < a.count:
            sim.publish_readings()
            time.sleep(a.period)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        client.loop_stop()
        client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
