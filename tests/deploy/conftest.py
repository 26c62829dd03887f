import pytest

from tests.deploy.redis_server import redis_server


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url
