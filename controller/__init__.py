"""The controller: scheduling, drone registry, backend index and state relay, DNS."""
