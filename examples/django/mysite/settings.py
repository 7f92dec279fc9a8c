"""Settings of the example site: production-like (DEBUG off, static files
from WhiteNoise, errors logged to stderr), with nothing that needs a
database migration."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# An example's key: set DJANGO_SECRET_KEY for anything that is not a demo.
SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "django-insecure-ringway-example-not-for-production"
)

DEBUG = os.environ.get("DJANGO_DEBUG") == "1"

ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "pages",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
            ],
        },
    },
]

WSGI_APPLICATION = "mysite.wsgi.application"

# No view touches the database; the file is created only if something does.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files: `python manage.py collectstatic` writes them (with hashed
# names and compressed copies) into STATIC_ROOT, and WhiteNoise serves them.
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage",
    },
}

# Uploads larger than this go to a temporary file as they arrive (Django's
# TemporaryFileUploadHandler) instead of memory, and under ASGI Django spools
# the request body to disk past this size: a worker's memory stays bounded
# whatever the size of an upload.
FILE_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024

# CSRF uses its cookie (no sessions, so no migrations).
CSRF_USE_SESSIONS = False

# With DEBUG off Django only mails tracebacks to ADMINS; a server's operator
# reads them on stderr, which ringway passes on to its error log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "stderr": {"class": "logging.StreamHandler"},
    },
    "loggers": {
        "django": {"handlers": ["stderr"], "level": "INFO"},
    },
}
