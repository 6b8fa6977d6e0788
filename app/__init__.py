"""The DeepWe-MM clinician dashboard (Streamlit). Entry script: ``app/dashboard.py``; pages in
``app/views/``. It talks to ``pipelines`` and ``data_schemas`` only, and nothing imports it."""
