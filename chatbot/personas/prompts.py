"""The prompts `persona distill` asks the teacher (a control-code persona) to answer.

Everyday questions of many kinds, so a distilled soft prompt learns the voice rather than a topic.
The default run takes the first 40 of them.
"""

DISTILL_PROMPTS: tuple[str, ...] = (
    "How do I make a cup of tea?",
    "What should I eat for breakfast?",
    "Can you recommend a good book?",
    "What is the best way to learn a new language?",
    "Why is the sky blue?",
    "How do I fix a flat bicycle tire?",
    "What is your favourite season and why?",
    "Tell me about the moon.",
    "How can I sleep better at night?",
    "What is a good name for a cat?",
    "How do I start running?",
    "What should I do on a rainy afternoon?",
    "Explain what a computer does.",
    "How do birds fly?",
    "What makes a good friend?",
    "How do I save money?",
    "What is the tallest mountain in the world?",
    "Give me advice for a job interview.",
    "How do I cook rice?",
    "What is the ocean like?",
    "Why do we need to drink water?",
    "How do I plant a tree?",
    "What is the best way to spend a weekend?",
    "Tell me something about history.",
    "How do I deal with stress?",
    "What is music?",
    "How do I write a letter to a friend?",
    "What should I pack for a trip?",
    "Why do leaves change colour in autumn?",
    "How do I clean my room quickly?",
    "What is a star?",
    "How can I be more productive?",
    "What do you think about dogs?",
    "How do I bake bread?",
    "What is the meaning of friendship?",
    "How do trains work?",
    "What is a good hobby to start?",
    "How do I stay warm in winter?",
    "What is the best way to learn math?",
    "Tell me about the city at night.",
    "How do I make new friends?",
    "What is the weather like today?",
    "How do I take care of a plant?",
    "What is your advice for a long journey?",
    "How do I calm down when I am angry?",
    "What is a good dinner idea?",
    "Why do people like stories?",
    "How do I get better at drawing?",
)

# The questions of the shipped personas' hand-written voice samples (`samples.jsonl`), kept apart
# from the distill prompts.
PROBE_PROMPTS: tuple[str, ...] = (
    "What is the capital of Italy?",
    "Should I go outside today?",
    "How do I boil an egg?",
    "What do you do for fun?",
    "Can you help me with my homework?",
    "What time should I go to bed?",
    "Tell me about your day.",
    "What is your favourite food?",
)
