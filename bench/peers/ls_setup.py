"""Label Studio's side of `bench/peers/run_peers.py`, run with Label Studio's own Python.

`setup SPEC.json OUT.json`: migrates Label Studio's PostgreSQL database, makes one organization
with an administrator and the bench's annotators (members of it, as people invited to it are),
one project with the two-choice labeling config and overlap 30 (each task annotated by at most
30 people, as ualign's 10 items a prompt with a quota of 3), imports the prompts as tasks the way the import API does
(bulk create, then the project's counters and task states), and writes the project's id and,
per annotator, a logged-in session cookie (Label Studio keeps sessions in signed cookies) for the
closed-loop users, who start logged in as ualign's start as joined participants.

The annotators share one password, hashed once: Label Studio hashes with Django's PBKDF2, about
half a second of CPU per user here, which would only make the setup slow.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from uuid import uuid4

LABEL_CONFIG = """<View>
  <Header value="Which response is better?"/>
  <Text name="prompt" value="$prompt"/>
  <Text name="response_1" value="$response_1"/>
  <Text name="response_2" value="$response_2"/>
  <Choices name="preference" toName="prompt" choice="single" required="true" showInLine="true">
    <Choice value="Response 1"/>
    <Choice value="Response 2"/>
  </Choices>
</View>"""


def _django() -> None:
    import label_studio

    sys.path.insert(0, os.path.dirname(label_studio.__file__))  # as label_studio.server does
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings.label_studio")
    import django

    django.setup()


def setup(spec: dict) -> dict:
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.hashers import make_password
    from django.contrib.sessions.backends.signed_cookies import SessionStore
    from django.core.management import call_command
    from organizations.models import Organization, OrganizationMember
    from projects.models import Project
    from tasks.models import Task
    from users.models import User

    call_command("migrate", verbosity=0, interactive=False)
    admin = User.objects.create_user(email="admin@bench.local", password=spec["password"])
    admin.is_staff = admin.is_superuser = True
    organization = Organization.create_organization(created_by=admin, title="bench")
    admin.active_organization = organization
    admin.save()
    project = Project.objects.create(title="Pairwise preference", label_config=LABEL_CONFIG, created_by=admin,
                                     organization=organization, maximum_annotations=spec["per_prompt"],
                                     show_skip_button=False)
    prompts = json.loads(Path(spec["prompts"]).read_text())
    tasks = Task.objects.bulk_create(
        [Task(project=project, overlap=spec["per_prompt"], data={"prompt": p["prompt"], "response_1": p["responses"][0],
                                                  "response_2": p["responses"][1], "ref": p["id"]})
         for p in prompts], batch_size=1000)
    project.update_tasks_counters_and_task_states(tasks_queryset=Task.objects.filter(project=project),
                                                  maximum_annotations_changed=False,
                                                  overlap_cohort_percentage_changed=False, tasks_number_changed=True)
    project.summary.update_data_columns([t.data for t in tasks])
    # The backend Label Studio's login view records in the session (users/views.py, user_login).
    hashed, backend = make_password(spec["password"]), "django.contrib.auth.backends.ModelBackend"
    annotators = []
    for i in range(spec["annotators"]):
        user = User(email=f"annotator{i}@bench.local", username=f"annotator{i}", password=hashed,
                    active_organization=organization)
        user.save()
        OrganizationMember.objects.create(user=user, organization=organization)
        session = SessionStore()
        session[SESSION_KEY], session[BACKEND_SESSION_KEY] = str(user.pk), backend
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        # What its login and middlewares add (InactivitySessionTimeoutMiddleWare logs out a session
        # without last_login; the organization and uid are set on the first request otherwise).
        session["last_login"], session["organization_pk"], session["uid"] = time.time(), organization.pk, str(uuid4())
        session.save()
        annotators.append({"email": user.email, "session": session.session_key})
    return {"project": project.pk, "tasks": len(tasks), "session_cookie": settings.SESSION_COOKIE_NAME,
            "csrf_cookie": settings.CSRF_COOKIE_NAME, "annotators": annotators}


def main() -> None:
    command, spec_path, out_path = sys.argv[1:4]
    if command != "setup":
        raise SystemExit(f"unknown command {command!r}")
    _django()
    Path(out_path).write_text(json.dumps(setup(json.loads(Path(spec_path).read_text()))))


if __name__ == "__main__":
    main()
