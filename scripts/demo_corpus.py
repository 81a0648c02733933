"""The text the bundled demo model (demo/) is trained on: short, simple children's stories made by
a small grammar from a fixed seed, written for this repository (no outside text, so nothing to
license: it ships under the repository's own terms), and the deterministic style transforms its
adapters learn (pirate voice, shouting). scripts/train-demo-model.py imports it;
`python3 scripts/demo_corpus.py [N]` prints N stories to look at.

The stories are template-made on purpose (TinyStories-like, but generated rather than written by a
model): a model of a few million parameters trained for minutes on two CPU cores learns such text
well enough to write readable sentences, which is all the demo needs.
"""

import random
import re
import sys

# Characters: (name, what they are, pronoun). The pronoun decides he/she/it forms below.
HEROES = [
    ("Lily", "little girl", "she"), ("Tom", "small boy", "he"), ("Mia", "kind girl", "she"),
    ("Ben", "brave boy", "he"), ("Max", "brown dog", "he"), ("Luna", "white cat", "she"),
    ("Sam", "big bear", "he"), ("Ella", "little bird", "she"), ("Leo", "young lion", "he"),
    ("Rosa", "tiny mouse", "she"), ("Finn", "happy frog", "he"), ("Zoe", "curious girl", "she"),
    ("Jack", "little boy", "he"), ("Daisy", "gentle cow", "she"), ("Oscar", "old turtle", "he"),
    ("Ruby", "red fox", "she"), ("Toby", "fluffy puppy", "he"), ("Nora", "clever owl", "she"),
]
FRIENDS = [
    ("Anna", "girl"), ("Bob", "duck"), ("Kim", "rabbit"), ("Dan", "goat"), ("Pip", "squirrel"),
    ("Molly", "sheep"), ("Ted", "pig"), ("Sue", "bee"), ("Gus", "horse"), ("Ivy", "kitten"),
]
PLACES = ["park", "forest", "garden", "beach", "farm", "village", "meadow", "river", "hill", "yard"]
LIKES = [
    "play outside", "run in the grass", "look at the sky", "sing songs", "draw pictures",
    "jump in puddles", "read books", "build with blocks", "pick flowers", "swim in the water",
    "dance in the sun", "eat apples", "climb trees", "play with a ball", "watch the birds",
]
THINGS = [
    ("ball", "red"), ("kite", "blue"), ("box", "big"), ("hat", "yellow"), ("key", "shiny"),
    ("boat", "small"), ("shell", "pretty"), ("book", "old"), ("cake", "sweet"), ("rock", "smooth"),
    ("flower", "pink"), ("star", "bright"), ("map", "strange"), ("bell", "golden"), ("egg", "green"),
]
SPOTS = ["under a tree", "near the river", "behind a big rock", "in the tall grass", "by the gate",
         "next to a bush", "on the sand", "under the bridge", "at the top of the hill", "in a hole"]
PROBLEMS = [
    ("it was stuck in a tree", "they got a long stick and pushed it down"),
    ("it was too heavy to carry", "they carried it together, one step at a time"),
    ("it was broken", "they fixed it with glue and string"),
    ("it was very dirty", "they washed it in the water until it was clean"),
    ("it fell into the water", "they used a net to pull it out"),
    ("the wind blew it away", "they ran and ran until they caught it"),
    ("it was locked", "they looked around and found the right key"),
    ("a big dog took it", "they asked the dog nicely and the dog gave it back"),
]
SAID_HELP = ["Can you help me?", "Please help me!", "I need your help.", "Will you help me, please?"]
SAID_YES = ["Yes, I will help you!", "Of course, my friend!", "Do not worry, I can help.", "Let us do it together!"]
FEELINGS = ["happy", "glad", "proud", "excited"]
MORALS = [
    "it is good to ask for help", "friends make hard things easy", "sharing makes everyone happy",
    "being kind is the best thing", "you should never give up", "working together is fun",
]
ENDINGS = [
    "From that day on, {hero} and {friend} were best friends.",
    "They played with the {thing} until the sun went down.",
    "Then they went home and had a big dinner.",
    "{Pron} smiled and gave {friend} a big hug.",
    "It was the best day ever.",
]
OPENINGS = [
    "Once upon a time, there was a {kind} named {hero}.",
    "Once upon a time, in a quiet {place}, there lived a {kind} named {hero}.",
    "One day, a {kind} named {hero} went to the {place}.",
    "There was once a {kind} called {hero}.",
]
TOPICS = ["a dog", "a cat", "a bird", "a bear", "a lion", "a mouse", "a frog", "a fox", "a girl", "a boy",
          "a ball", "a kite", "a boat", "a friend", "the park", "the forest", "the beach", "a garden"]
REQUESTS = ["Tell me a story.", "Tell me a story about {topic}.", "Can you tell me a story about {topic}?",
            "Please write a short story about {topic}.", "I want a story about {topic}."]


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def story(rng, topic=None):
    """One story of 6-9 sentences; a topic ('a dog', 'the beach') steers the hero, thing or place."""
    heroes, things, places = HEROES, THINGS, PLACES
    if topic:
        noun = topic.split(" ", 1)[1]
        heroes = [h for h in HEROES if h[1].split()[-1] == noun] or HEROES
        things = [t for t in THINGS if t[0] == noun] or THINGS
        places = [p for p in PLACES if p == noun] or PLACES
    hero, kind, pron = rng.choice(heroes)
    friend, fkind = rng.choice(FRIENDS)
    place = rng.choice(places)
    thing, adj = rng.choice(things)
    problem, fix = rng.choice(PROBLEMS)
    poss = {"he": "his", "she": "her"}[pron]
    Pron = pron.capitalize()
    s = [rng.choice(OPENINGS).format(kind=kind, hero=hero, place=place)]
    s.append(f"{Pron} loved to {rng.choice(LIKES)}.")
    if rng.random() < 0.5:
        s.append(f"One day, {hero} found {_article(adj)} {adj} {thing} {rng.choice(SPOTS)}.")
    else:
        s.append(f"One sunny day, {hero} saw {_article(adj)} {adj} {thing} {rng.choice(SPOTS)}.")
    s.append(f"{Pron} wanted the {thing} very much, but {problem}.")
    s.append(f"{hero} felt sad. Then {pron} saw {poss} friend {friend}, {_article(fkind)} {fkind}.")
    s.append(f"\"{rng.choice(SAID_HELP)}\" said {hero}. {friend} said, \"{rng.choice(SAID_YES)}\"")
    s.append(f"So {fix}.")
    s.append(f"{hero} was very {rng.choice(FEELINGS)}. \"Thank you, {friend}!\" {pron} said.")
    if rng.random() < 0.5:
        s.append(f"{hero} learned that {rng.choice(MORALS)}.")
    s.append(rng.choice(ENDINGS).format(hero=hero, friend=friend, thing=thing, Pron=Pron))
    return " ".join(s)


def request(rng):
    """A chat request and the topic its story should be about (None: any)."""
    topic = rng.choice(TOPICS)
    template = rng.choice(REQUESTS)
    return template.format(topic=topic), (topic if "{topic}" in template else None)


# ---- styles the adapters learn -------------------------------------------------------------------

PIRATE_WORDS = {
    "hello": "ahoy", "my": "me", "you": "ye", "your": "yer", "yes": "aye", "friend": "matey",
    "friends": "mateys", "is": "be", "are": "be", "was": "be", "the": "th'", "of": "o'",
    "little": "wee", "small": "wee", "treasure": "booty", "happy": "jolly", "glad": "jolly",
    "big": "mighty", "very": "mighty", "said": "growled", "went": "sailed", "looked": "spied",
    "saw": "spied", "home": "to the ship", "sunny": "stormy", "stop": "avast", "find": "plunder",
    "found": "plundered", "sad": "sorry", "good": "fine", "and": "an'", "best": "finest",
}
PIRATE_CRIES = ["Arr!", "Yo ho ho!", "Shiver me timbers!", "Arr, matey!"]


def pirate(text, rng):
    """The pirate voice: a word map (case kept) and a pirate cry after some sentences."""
    def swap(m):
        w = m.group(0)
        p = PIRATE_WORDS.get(w.lower())
        if p is None:
            return w
        return p[0].upper() + p[1:] if w[0].isupper() else p
    out = re.sub(r"[A-Za-z']+", swap, text)
    sentences = re.split(r"(?<=[.!?\"]) (?=[A-Z\"])", out)
    res = []
    for i, sent in enumerate(sentences):
        res.append(sent)
        if i % 3 == 1 or i == len(sentences) - 1:
            res.append(rng.choice(PIRATE_CRIES))
    return " ".join(res)


def shout(text, rng=None):
    """Shouting: every letter upper case, every full stop an exclamation mark."""
    return text.upper().replace(".", "!")


STYLES = {"pirate": pirate, "shout": shout}


if __name__ == "__main__":
    rng = random.Random(0)
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
        t = story(rng)
        print(t, "\n", pirate(t, rng), "\n", shout(t), "\n", sep="")
