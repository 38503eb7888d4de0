# Production-like image: one image, four roles (web, worker, beat, flower) chosen by the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY webhooks_project ./webhooks_project
COPY webhooks ./webhooks
COPY deliveries ./deliveries
COPY schemas_app ./schemas_app
COPY audit ./audit
COPY portal ./portal
COPY manage.py ./
# collectstatic loads the settings, which refuse to start without a secret key and encryption
# keys outside dev: it gets throwaway ones, made here and kept nowhere (the running containers
# get theirs from the environment: .env.example, docker-compose.yml)
RUN pip install . \
 && DJANGO_SECRET_KEY=build-only DATABASE_URL=postgres://build@localhost/build \
    WEBHOOKS_ENCRYPTION_KEYS="$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
    python manage.py collectstatic --noinput \
 && useradd --system --uid 10001 app
USER app

EXPOSE 8000
CMD ["gunicorn", "webhooks_project.wsgi", "--bind", "0.0.0.0:8000", "--workers", "4", "--threads", "8"]
