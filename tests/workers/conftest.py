"""Real service parts as fixtures (see tests/workers/servers.py)."""

from tests.workers.servers import (  # noqa: F401
                                   moto_endpoint,
                                                                  redis_server,
                                   redis_url,
                                   s3,
                                   scene,
                                   service_env,
                                   tiny_models,
                                   workers,
)
