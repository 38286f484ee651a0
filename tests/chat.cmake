# data: prompt/response JSONL through chat templates (ChatML, Llama 3) against
# transformers' apply_chat_template (tests/fixtures/chat, from
# tests/fixtures/gen_chat_template_fixtures.py): text, ids, and the loss mask.
qt_test(test_chat_template LABEL data SOURCES test_chat_template.c LIBS qt_data qt_formats qt_autograd)
