"""Build EditScope's shipped fact catalog from the small tables below.

Run ``python scripts/build_catalog.py`` from the repository root; it rewrites

* ``data/facts.jsonl``      single facts (one :class:`editcore.cases.Case` per line),
* ``data/multihop.jsonl``   MQuAKE-style chains (:class:`MultiHopCase`),
* ``data/conflicts.jsonl``  reverse and composite conflicts (:class:`ConflictCase`),
* ``data/roundtrip.jsonl``  round-trip edits over one-to-many relations (:class:`RoundTripCase`).

Every record is derived from the entity tables, so a fact's neighbours share its true answer by
construction and every answer is stated once. The output is deterministic (no randomness, sorted
choices), so re-running the script on unchanged tables gives byte-identical files.

To extend the catalog, add rows to a table; to add a relation, add a ``Relation`` and a group source in
``single_facts``. Old targets must be true in the real world: check a row before adding it.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from editcore.cases import Case, ConflictCase, MultiHopCase, Probe, RoundTripCase  # noqa: E402

PER_GROUP = 6  # facts taken from each group of subjects sharing an answer
N_NEIGHBOURS = 5
N_NEW_TARGETS = 3

# ---------------------------------------------------------------------------------------------------
# Entity tables
# ---------------------------------------------------------------------------------------------------

# country: capital, continent (None where it spans two), official languages, currency, demonym adjective
COUNTRIES: dict[str, tuple[str, str | None, tuple[str, ...], str, str]] = {
    "France": ("Paris", "Europe", ("French",), "euro", "French"),
    "Germany": ("Berlin", "Europe", ("German",), "euro", "German"),
    "Italy": ("Rome", "Europe", ("Italian",), "euro", "Italian"),
    "Spain": ("Madrid", "Europe", ("Spanish",), "euro", "Spanish"),
    "Portugal": ("Lisbon", "Europe", ("Portuguese",), "euro", "Portuguese"),
    "Netherlands": ("Amsterdam", "Europe", ("Dutch", "West Frisian"), "euro", "Dutch"),
    "Austria": ("Vienna", "Europe", ("German",), "euro", "Austrian"),
    "Greece": ("Athens", "Europe", ("Greek",), "euro", "Greek"),
    "Ireland": ("Dublin", "Europe", ("Irish", "English"), "euro", "Irish"),
    "Finland": ("Helsinki", "Europe", ("Finnish", "Swedish"), "euro", "Finnish"),
    "Belgium": ("Brussels", "Europe", ("Dutch", "French", "German"), "euro", "Belgian"),
    "Luxembourg": ("Luxembourg", "Europe", ("Luxembourgish", "French", "German"), "euro", "Luxembourgish"),
    "Malta": ("Valletta", "Europe", ("Maltese", "English"), "euro", "Maltese"),
    "Monaco": ("Monaco", "Europe", ("French",), "euro", "Monegasque"),
    "Poland": ("Warsaw", "Europe", ("Polish",), "Polish złoty", "Polish"),
    "Sweden": ("Stockholm", "Europe", ("Swedish",), "Swedish krona", "Swedish"),
    "Norway": ("Oslo", "Europe", ("Norwegian", "Sami"), "Norwegian krone", "Norwegian"),
    "Switzerland": ("Bern", "Europe", ("German", "French", "Italian", "Romansh"), "Swiss franc", "Swiss"),
    "Liechtenstein": ("Vaduz", "Europe", ("German",), "Swiss franc", "Liechtensteiner"),
    "United Kingdom": ("London", "Europe", (), "pound sterling", "British"),
    "Russia": ("Moscow", None, ("Russian",), "Russian ruble", "Russian"),
    "Turkey": ("Ankara", None, ("Turkish",), "Turkish lira", "Turkish"),
    "Japan": ("Tokyo", "Asia", (), "Japanese yen", "Japanese"),
    "China": ("Beijing", "Asia", ("Standard Chinese",), "renminbi", "Chinese"),
    "India": ("New Delhi", "Asia", ("Hindi", "English"), "Indian rupee", "Indian"),
    "Thailand": ("Bangkok", "Asia", ("Thai",), "Thai baht", "Thai"),
    "Vietnam": ("Hanoi", "Asia", ("Vietnamese",), "Vietnamese dong", "Vietnamese"),
    "South Korea": ("Seoul", "Asia", ("Korean",), "South Korean won", "South Korean"),
    "Nepal": ("Kathmandu", "Asia", ("Nepali",), "Nepalese rupee", "Nepali"),
    "Mongolia": ("Ulaanbaatar", "Asia", ("Mongolian",), "Mongolian tögrög", "Mongolian"),
    "Philippines": ("Manila", "Asia", ("Filipino", "English"), "Philippine peso", "Filipino"),
    "Pakistan": ("Islamabad", "Asia", ("Urdu", "English"), "Pakistani rupee", "Pakistani"),
    "Singapore": ("Singapore", "Asia", ("English", "Malay", "Mandarin", "Tamil"), "Singapore dollar", "Singaporean"),
    "Afghanistan": ("Kabul", "Asia", ("Pashto", "Dari"), "Afghan afghani", "Afghan"),
    "Saudi Arabia": ("Riyadh", "Asia", ("Arabic",), "Saudi riyal", "Saudi"),
    "Jordan": ("Amman", "Asia", ("Arabic",), "Jordanian dinar", "Jordanian"),
    "Syria": ("Damascus", "Asia", ("Arabic",), "Syrian pound", "Syrian"),
    "Yemen": ("Sanaa", "Asia", ("Arabic",), "Yemeni rial", "Yemeni"),
    "Oman": ("Muscat", "Asia", ("Arabic",), "Omani rial", "Omani"),
    "Kuwait": ("Kuwait City", "Asia", ("Arabic",), "Kuwaiti dinar", "Kuwaiti"),
    "Qatar": ("Doha", "Asia", ("Arabic",), "Qatari riyal", "Qatari"),
    "Egypt": ("Cairo", "Africa", ("Arabic",), "Egyptian pound", "Egyptian"),
    "Libya": ("Tripoli", "Africa", ("Arabic",), "Libyan dinar", "Libyan"),
    "Morocco": ("Rabat", "Africa", ("Arabic", "Berber"), "Moroccan dirham", "Moroccan"),
    "Nigeria": ("Abuja", "Africa", ("English",), "Nigerian naira", "Nigerian"),
    "Ghana": ("Accra", "Africa", ("English",), "Ghanaian cedi", "Ghanaian"),
    "Liberia": ("Monrovia", "Africa", ("English",), "Liberian dollar", "Liberian"),
    "Zambia": ("Lusaka", "Africa", ("English",), "Zambian kwacha", "Zambian"),
    "Kenya": ("Nairobi", "Africa", ("Swahili", "English"), "Kenyan shilling", "Kenyan"),
    "Tanzania": ("Dodoma", "Africa", ("Swahili", "English"), "Tanzanian shilling", "Tanzanian"),
    "Uganda": ("Kampala", "Africa", ("English", "Swahili"), "Ugandan shilling", "Ugandan"),
    "Rwanda": ("Kigali", "Africa", ("Kinyarwanda", "English", "French", "Swahili"), "Rwandan franc", "Rwandan"),
    "Cameroon": ("Yaoundé", "Africa", ("French", "English"), "Central African CFA franc", "Cameroonian"),
    "Ethiopia": ("Addis Ababa", "Africa", ("Amharic", "Oromo", "Tigrinya", "Somali", "Afar"), "Ethiopian birr",
                 "Ethiopian"),
    "Senegal": ("Dakar", "Africa", ("French",), "West African CFA franc", "Senegalese"),
    "Ivory Coast": ("Yamoussoukro", "Africa", ("French",), "West African CFA franc", "Ivorian"),
    "Gabon": ("Libreville", "Africa", ("French",), "Central African CFA franc", "Gabonese"),
    "Guinea": ("Conakry", "Africa", ("French",), "Guinean franc", "Guinean"),
    "Mali": ("Bamako", "Africa", (), "West African CFA franc", "Malian"),
    "Niger": ("Niamey", "Africa", (), "West African CFA franc", "Nigerien"),
    "Burkina Faso": ("Ouagadougou", "Africa", (), "West African CFA franc", "Burkinabé"),
    "Togo": ("Lomé", "Africa", ("French",), "West African CFA franc", "Togolese"),
    "Angola": ("Luanda", "Africa", ("Portuguese",), "Angolan kwanza", "Angolan"),
    "Mozambique": ("Maputo", "Africa", ("Portuguese",), "Mozambican metical", "Mozambican"),
    "Cape Verde": ("Praia", "Africa", ("Portuguese",), "Cape Verdean escudo", "Cape Verdean"),
    "Guinea-Bissau": ("Bissau", "Africa", ("Portuguese",), "West African CFA franc", "Bissau-Guinean"),
    "Brazil": ("Brasília", "South America", ("Portuguese",), "Brazilian real", "Brazilian"),
    "Argentina": ("Buenos Aires", "South America", (), "Argentine peso", "Argentine"),
    "Chile": ("Santiago", "South America", (), "Chilean peso", "Chilean"),
    "Peru": ("Lima", "South America", ("Spanish", "Quechua", "Aymara"), "Peruvian sol", "Peruvian"),
    "Colombia": ("Bogotá", "South America", ("Spanish",), "Colombian peso", "Colombian"),
    "Venezuela": ("Caracas", "South America", ("Spanish",), "Venezuelan bolívar", "Venezuelan"),
    "Ecuador": ("Quito", "South America", ("Spanish",), "United States dollar", "Ecuadorian"),
    "Paraguay": ("Asunción", "South America", ("Spanish", "Guarani"), "Paraguayan guaraní", "Paraguayan"),
    "Uruguay": ("Montevideo", "South America", (), "Uruguayan peso", "Uruguayan"),
    "Canada": ("Ottawa", "North America", ("English", "French"), "Canadian dollar", "Canadian"),
    "United States": ("Washington, D.C.", "North America", (), "United States dollar", "American"),
    "Mexico": ("Mexico City", "North America", (), "Mexican peso", "Mexican"),
    "Cuba": ("Havana", "North America", ("Spanish",), "Cuban peso", "Cuban"),
    "Guatemala": ("Guatemala City", "North America", ("Spanish",), "Guatemalan quetzal", "Guatemalan"),
    "Honduras": ("Tegucigalpa", "North America", ("Spanish",), "Honduran lempira", "Honduran"),
    "Costa Rica": ("San José", "North America", ("Spanish",), "Costa Rican colón", "Costa Rican"),
    "Dominican Republic": ("Santo Domingo", "North America", ("Spanish",), "Dominican peso", "Dominican"),
    "Jamaica": ("Kingston", "North America", ("English",), "Jamaican dollar", "Jamaican"),
    "Bahamas": ("Nassau", "North America", ("English",), "Bahamian dollar", "Bahamian"),
    "Australia": ("Canberra", "Oceania", (), "Australian dollar", "Australian"),
    "New Zealand": ("Wellington", "Oceania", ("English", "Māori", "New Zealand Sign Language"), "New Zealand dollar",
                    "New Zealander"),
    "Fiji": ("Suva", "Oceania", ("English", "Fijian", "Fiji Hindi"), "Fijian dollar", "Fijian"),
    "Papua New Guinea": ("Port Moresby", "Oceania", ("English", "Tok Pisin", "Hiri Motu"), "Papua New Guinean kina",
                         "Papua New Guinean"),
    "Samoa": ("Apia", "Oceania", ("Samoan", "English"), "Samoan tālā", "Samoan"),
    "Tonga": ("Nukuʻalofa", "Oceania", ("Tongan", "English"), "Tongan paʻanga", "Tongan"),
}

COUNTRY_ALIASES = {
    "United States": ("USA", "US", "America", "United States of America"),
    "United Kingdom": ("UK", "Britain", "Great Britain"),
    "Netherlands": ("Holland", "the Netherlands"),
    "Ivory Coast": ("Côte d'Ivoire",),
    "South Korea": ("Korea", "Republic of Korea"),
    "Russia": ("Russian Federation",),
    "Czech Republic": ("Czechia",),
}

# city: country, river (or None). Cities with landmarks are listed in LANDMARKS too.
CITIES: dict[str, tuple[str, str | None]] = {
    "Paris": ("France", "Seine"), "Lyon": ("France", "Rhône"), "Marseille": ("France", None),
    "Toulouse": ("France", "Garonne"), "Nice": ("France", None), "Bordeaux": ("France", "Garonne"),
    "Lille": ("France", None), "Strasbourg": ("France", "Rhine"), "Besançon": ("France", "Doubs"),
    "Berlin": ("Germany", "Spree"), "Munich": ("Germany", "Isar"), "Hamburg": ("Germany", "Elbe"),
    "Frankfurt": ("Germany", "Main"), "Cologne": ("Germany", "Rhine"), "Stuttgart": ("Germany", "Neckar"),
    "Dresden": ("Germany", "Elbe"), "Bonn": ("Germany", "Rhine"), "Ulm": ("Germany", "Danube"),
    "Trier": ("Germany", "Moselle"), "Kiel": ("Germany", None), "Würzburg": ("Germany", "Main"),
    "Eisenach": ("Germany", None), "Röcken": ("Germany", None),
    "Rome": ("Italy", "Tiber"), "Milan": ("Italy", None), "Naples": ("Italy", None), "Turin": ("Italy", "Po"),
    "Florence": ("Italy", "Arno"), "Venice": ("Italy", None), "Bologna": ("Italy", None),
    "Modena": ("Italy", None), "Rimini": ("Italy", None), "Lucca": ("Italy", "Serchio"),
    "Madrid": ("Spain", "Manzanares"), "Barcelona": ("Spain", None), "Seville": ("Spain", "Guadalquivir"),
    "Valencia": ("Spain", None), "Bilbao": ("Spain", None), "Málaga": ("Spain", None),
    "Alcalá de Henares": ("Spain", "Henares"), "Alcobendas": ("Spain", None),
    "Tokyo": ("Japan", "Sumida"), "Osaka": ("Japan", None), "Kyoto": ("Japan", "Kamo"),
    "Yokohama": ("Japan", None), "Nagoya": ("Japan", None), "Sapporo": ("Japan", None), "Nakano": ("Japan", None),
    "New York City": ("United States", "Hudson"), "Chicago": ("United States", "Chicago River"),
    "Los Angeles": ("United States", None), "Houston": ("United States", None),
    "Boston": ("United States", "Charles"), "Seattle": ("United States", None), "Miami": ("United States", None),
    "Washington, D.C.": ("United States", "Potomac"), "Honolulu": ("United States", None),
    "Oak Park": ("United States", None), "Cincinnati": ("United States", "Ohio"),
    "Knoxville": ("United States", "Tennessee"), "Floral Park": ("United States", None),
    "London": ("United Kingdom", "Thames"), "Manchester": ("United Kingdom", None),
    "Liverpool": ("United Kingdom", "Mersey"), "Birmingham": ("United Kingdom", None),
    "Edinburgh": ("United Kingdom", None), "Leeds": ("United Kingdom", "Aire"),
    "Stratford-upon-Avon": ("United Kingdom", "Avon"), "Portsmouth": ("United Kingdom", None),
    "Steventon": ("United Kingdom", None), "Pinner": ("United Kingdom", None),
    "Woolsthorpe": ("United Kingdom", None),
    "Rio de Janeiro": ("Brazil", None), "São Paulo": ("Brazil", None), "Brasília": ("Brazil", None),
    "Salvador": ("Brazil", None), "Recife": ("Brazil", None), "Fortaleza": ("Brazil", None),
    "Toronto": ("Canada", None), "Montreal": ("Canada", "Saint Lawrence"), "Vancouver": ("Canada", None),
    "Ottawa": ("Canada", "Ottawa River"), "Calgary": ("Canada", "Bow"), "Winnipeg": ("Canada", "Red River"),
    "Sydney": ("Australia", None), "Melbourne": ("Australia", "Yarra"), "Brisbane": ("Australia", "Brisbane River"),
    "Adelaide": ("Australia", "Torrens"), "Canberra": ("Australia", None), "Hobart": ("Australia", "Derwent"),
    "Beijing": ("China", None), "Shanghai": ("China", "Huangpu"),
    "Mumbai": ("India", None), "Motihari": ("India", None),
    "Moscow": ("Russia", "Moskva"), "Saint Petersburg": ("Russia", "Neva"), "Taganrog": ("Russia", None),
    "Yasnaya Polyana": ("Russia", None), "Klushino": ("Russia", None), "Votkinsk": ("Russia", None),
    "Vienna": ("Austria", "Danube"), "Salzburg": ("Austria", "Salzach"),
    "Athens": ("Greece", None), "Istanbul": ("Turkey", None),
    "Amsterdam": ("Netherlands", "Amstel"), "Zundert": ("Netherlands", None), "Leiden": ("Netherlands", None),
    "Żelazowa Wola": ("Poland", None), "Aracataca": ("Colombia", None), "Barranquilla": ("Colombia", "Magdalena"),
    "Rosario": ("Argentina", "Paraná"), "Coyoacán": ("Mexico", None),
    "Le Cateau-Cambrésis": ("France", None), "Cairo": ("Egypt", "Nile"),
}

# Cities whose own country spans two continents get the continent of their landmarks here.
CITY_CONTINENT = {"Moscow": "Europe", "Istanbul": "Europe"}

# landmark (as written mid-sentence): city, kind. The first six of each city become facts.
LANDMARKS: dict[str, list[tuple[str, str]]] = {
    "Paris": [("the Louvre", "museum"), ("the Eiffel Tower", "tower"), ("Notre-Dame de Paris", "cathedral"),
              ("the Arc de Triomphe", "triumphal arch"), ("the Sacré-Cœur", "basilica"),
              ("the Musée d'Orsay", "museum"), ("the Centre Pompidou", "museum")],
    "London": [("Big Ben", "clock tower"), ("Tower Bridge", "bridge"), ("Buckingham Palace", "palace"),
               ("the British Museum", "museum"), ("Westminster Abbey", "church"), ("Trafalgar Square", "square"),
               ("St Paul's Cathedral", "cathedral")],
    "Rome": [("the Colosseum", "amphitheatre"), ("the Trevi Fountain", "fountain"), ("the Roman Forum", "ancient forum"),
             ("the Spanish Steps", "stairway"), ("Castel Sant'Angelo", "castle"), ("Piazza Navona", "square"),
             ("the Circus Maximus", "chariot-racing stadium")],
    "New York City": [("the Statue of Liberty", "statue"), ("the Empire State Building", "skyscraper"),
                      ("Central Park", "park"), ("Times Square", "square"), ("the Brooklyn Bridge", "bridge"),
                      ("the Metropolitan Museum of Art", "museum"), ("Rockefeller Center", "building complex")],
    "Berlin": [("the Brandenburg Gate", "city gate"), ("the Reichstag building", "parliament building"),
               ("Checkpoint Charlie", "border crossing"), ("Alexanderplatz", "square"),
               ("the Pergamon Museum", "museum"), ("the Kaiser Wilhelm Memorial Church", "church"),
               ("Museum Island", "museum complex")],
    "Moscow": [("Red Square", "square"), ("the Kremlin", "fortress"), ("Saint Basil's Cathedral", "cathedral"),
               ("the Bolshoi Theatre", "theatre"), ("Lenin's Mausoleum", "mausoleum"), ("Gorky Park", "park")],
    "Barcelona": [("the Sagrada Família", "basilica"), ("Park Güell", "park"), ("Casa Batlló", "building"),
                  ("Camp Nou", "stadium"), ("La Rambla", "street"), ("Casa Milà", "building")],
    "Venice": [("St Mark's Basilica", "basilica"), ("the Rialto Bridge", "bridge"), ("the Doge's Palace", "palace"),
               ("the Bridge of Sighs", "bridge"), ("the Grand Canal", "canal"), ("St Mark's Campanile", "bell tower")],
    "Washington, D.C.": [("the White House", "presidential residence"), ("the Lincoln Memorial", "memorial"),
                         ("the United States Capitol", "capitol building"), ("the Jefferson Memorial", "memorial"),
                         ("the National Mall", "park"), ("the Library of Congress", "library")],
    "Istanbul": [("Hagia Sophia", "mosque"), ("the Blue Mosque", "mosque"), ("Topkapı Palace", "palace"),
                 ("the Grand Bazaar", "covered market"), ("Galata Tower", "tower"), ("the Basilica Cistern", "cistern")],
    "Athens": [("the Acropolis", "citadel"), ("the Parthenon", "temple"), ("the Erechtheion", "temple"),
               ("the Temple of Olympian Zeus", "temple"), ("the Odeon of Herodes Atticus", "theatre"),
               ("the Panathenaic Stadium", "stadium")],
    "Tokyo": [("Sensō-ji", "temple"), ("the Meiji Shrine", "shrine"), ("Shibuya Crossing", "crossing"),
              ("Akihabara", "district"), ("Ginza", "district"), ("Roppongi Hills", "building complex")],
}

SUBJECT_ALIASES = {
    "the Louvre": ("the Louvre Museum", "Musée du Louvre"),
    "the Eiffel Tower": ("La Tour Eiffel",),
    "Notre-Dame de Paris": ("Notre-Dame Cathedral",),
    "Big Ben": ("the Elizabeth Tower",),
    "the Colosseum": ("the Flavian Amphitheatre",),
    "the Kremlin": ("the Moscow Kremlin",),
    "Hagia Sophia": ("Ayasofya",),
    "the Blue Mosque": ("the Sultan Ahmed Mosque",),
    "Sensō-ji": ("Asakusa Kannon Temple",),
    "the Sagrada Família": ("Basílica de la Sagrada Família",),
    "the United States Capitol": ("the Capitol",),
    "Windows 11": ("Microsoft Windows 11",),
    "Famicom": ("Family Computer", "Nintendo Entertainment System"),
    "Nineteen Eighty-Four": ("1984",),
    "The Hunchback of Notre-Dame": ("Notre-Dame de Paris (novel)",),
    "Danielle Darrieux": ("Danielle Yvonne Marie Antoinette Darrieux",),
    "Lady Gaga": ("Stefani Germanotta",),
    "Pelé": ("Edson Arantes do Nascimento",),
    "Slash": ("Saul Hudson",),
    "Ringo Starr": ("Richard Starkey",),
    "Voltaire": ("François-Marie Arouet",),
    "George Orwell": ("Eric Arthur Blair",),
    "Meta": ("Meta Platforms",),
}

# person: birthplace, occupation, native language
PEOPLE: dict[str, tuple[str, str, str]] = {
    "Danielle Darrieux": ("Bordeaux", "actress", "French"),
    "Victor Hugo": ("Besançon", "writer", "French"),
    "Édith Piaf": ("Paris", "singer", "French"),
    "Charles de Gaulle": ("Lille", "politician", "French"),
    "Claude Monet": ("Paris", "painter", "French"),
    "Catherine Deneuve": ("Paris", "actress", "French"),
    "Jean-Paul Sartre": ("Paris", "philosopher", "French"),
    "Marcel Proust": ("Paris", "writer", "French"),
    "Voltaire": ("Paris", "writer", "French"),
    "Charles Baudelaire": ("Paris", "poet", "French"),
    "Brigitte Bardot": ("Paris", "actress", "French"),
    "Henri Matisse": ("Le Cateau-Cambrésis", "painter", "French"),
    "Charlie Chaplin": ("London", "actor", "English"),
    "David Bowie": ("London", "singer", "English"),
    "Adele": ("London", "singer", "English"),
    "Alfred Hitchcock": ("London", "film director", "English"),
    "Virginia Woolf": ("London", "writer", "English"),
    "John Keats": ("London", "poet", "English"),
    "Christopher Nolan": ("London", "film director", "English"),
    "Akira Kurosawa": ("Tokyo", "film director", "Japanese"),
    "Hayao Miyazaki": ("Tokyo", "animator", "Japanese"),
    "Yoko Ono": ("Tokyo", "artist", "Japanese"),
    "Shinzo Abe": ("Tokyo", "politician", "Japanese"),
    "Hideo Kojima": ("Tokyo", "video game designer", "Japanese"),
    "Yukio Mishima": ("Tokyo", "writer", "Japanese"),
    "Haruki Murakami": ("Kyoto", "writer", "Japanese"),
    "Joe Hisaishi": ("Nakano", "composer", "Japanese"),
    "Franz Schubert": ("Vienna", "composer", "German"),
    "Arnold Schoenberg": ("Vienna", "composer", "German"),
    "Ludwig Wittgenstein": ("Vienna", "philosopher", "German"),
    "Stefan Zweig": ("Vienna", "writer", "German"),
    "Hedy Lamarr": ("Vienna", "actress", "German"),
    "Johann Strauss II": ("Vienna", "composer", "German"),
    "Donald Trump": ("New York City", "politician", "English"),
    "Robert De Niro": ("New York City", "actor", "English"),
    "Scarlett Johansson": ("New York City", "actress", "English"),
    "Lady Gaga": ("New York City", "singer", "English"),
    "Theodore Roosevelt": ("New York City", "politician", "English"),
    "Al Pacino": ("New York City", "actor", "English"),
    "Richard Feynman": ("New York City", "physicist", "English"),
    "Stanley Kubrick": ("New York City", "film director", "English"),
    "Bernard Herrmann": ("New York City", "composer", "English"),
    "Albert Einstein": ("Ulm", "physicist", "German"),
    "Angela Merkel": ("Hamburg", "politician", "German"),
    "Johann Wolfgang von Goethe": ("Frankfurt", "writer", "German"),
    "Ludwig van Beethoven": ("Bonn", "composer", "German"),
    "Karl Marx": ("Trier", "philosopher", "German"),
    "Friedrich Nietzsche": ("Röcken", "philosopher", "German"),
    "Max Planck": ("Kiel", "physicist", "German"),
    "Werner Heisenberg": ("Würzburg", "physicist", "German"),
    "Johann Sebastian Bach": ("Eisenach", "composer", "German"),
    "Wolfgang Amadeus Mozart": ("Salzburg", "composer", "German"),
    "Hans Zimmer": ("Frankfurt", "composer", "German"),
    "Sophia Loren": ("Rome", "actress", "Italian"),
    "Luciano Pavarotti": ("Modena", "singer", "Italian"),
    "Federico Fellini": ("Rimini", "film director", "Italian"),
    "Dante Alighieri": ("Florence", "poet", "Italian"),
    "Giacomo Puccini": ("Lucca", "composer", "Italian"),
    "Silvio Berlusconi": ("Milan", "politician", "Italian"),
    "Enrico Fermi": ("Rome", "physicist", "Italian"),
    "Ennio Morricone": ("Rome", "composer", "Italian"),
    "Sergio Leone": ("Rome", "film director", "Italian"),
    "Pablo Picasso": ("Málaga", "painter", "Spanish"),
    "Miguel de Cervantes": ("Alcalá de Henares", "writer", "Spanish"),
    "Penélope Cruz": ("Alcobendas", "actress", "Spanish"),
    "Antonio Banderas": ("Málaga", "actor", "Spanish"),
    "Gabriel García Márquez": ("Aracataca", "writer", "Spanish"),
    "Shakira": ("Barranquilla", "singer", "Spanish"),
    "Frida Kahlo": ("Coyoacán", "painter", "Spanish"),
    "Leo Tolstoy": ("Yasnaya Polyana", "writer", "Russian"),
    "Fyodor Dostoevsky": ("Moscow", "writer", "Russian"),
    "Vladimir Putin": ("Saint Petersburg", "politician", "Russian"),
    "Anton Chekhov": ("Taganrog", "writer", "Russian"),
    "Yuri Gagarin": ("Klushino", "cosmonaut", "Russian"),
    "Pyotr Ilyich Tchaikovsky": ("Votkinsk", "composer", "Russian"),
    "William Shakespeare": ("Stratford-upon-Avon", "playwright", "English"),
    "Charles Dickens": ("Portsmouth", "writer", "English"),
    "Barack Obama": ("Honolulu", "politician", "English"),
    "Elton John": ("Pinner", "singer", "English"),
    "Jane Austen": ("Steventon", "writer", "English"),
    "Ernest Hemingway": ("Oak Park", "writer", "English"),
    "Isaac Newton": ("Woolsthorpe", "physicist", "English"),
    "Steven Spielberg": ("Cincinnati", "film director", "English"),
    "Quentin Tarantino": ("Knoxville", "film director", "English"),
    "George Orwell": ("Motihari", "writer", "English"),
    "John Williams": ("Floral Park", "composer", "English"),
    "Vincent van Gogh": ("Zundert", "painter", "Dutch"),
    "Rembrandt": ("Leiden", "painter", "Dutch"),
    "Frédéric Chopin": ("Żelazowa Wola", "composer", "Polish"),
}

# musician: instrument, country of birth, genre
MUSICIANS: dict[str, tuple[str, str, str]] = {
    "Jimi Hendrix": ("guitar", "United States", "rock"), "Eric Clapton": ("guitar", "United Kingdom", "rock"),
    "Jimmy Page": ("guitar", "United Kingdom", "rock"), "B.B. King": ("guitar", "United States", "blues"),
    "Carlos Santana": ("guitar", "Mexico", "rock"), "Slash": ("guitar", "United Kingdom", "rock"),
    "Arthur Rubinstein": ("piano", "Poland", "classical"), "Lang Lang": ("piano", "China", "classical"),
    "Glenn Gould": ("piano", "Canada", "classical"), "Martha Argerich": ("piano", "Argentina", "classical"),
    "Daniel Barenboim": ("piano", "Argentina", "classical"),
    "Sergei Rachmaninoff": ("piano", "Russia", "classical"),
    "Niccolò Paganini": ("violin", "Italy", "classical"), "Itzhak Perlman": ("violin", "Israel", "classical"),
    "Jascha Heifetz": ("violin", "Lithuania", "classical"), "Yehudi Menuhin": ("violin", "United States", "classical"),
    "Joshua Bell": ("violin", "United States", "classical"),
    "Anne-Sophie Mutter": ("violin", "Germany", "classical"),
    "Charlie Parker": ("saxophone", "United States", "jazz"), "John Coltrane": ("saxophone", "United States", "jazz"),
    "Sonny Rollins": ("saxophone", "United States", "jazz"), "Stan Getz": ("saxophone", "United States", "jazz"),
    "Kenny G": ("saxophone", "United States", "jazz"), "Coleman Hawkins": ("saxophone", "United States", "jazz"),
    "Louis Armstrong": ("trumpet", "United States", "jazz"), "Miles Davis": ("trumpet", "United States", "jazz"),
    "Dizzy Gillespie": ("trumpet", "United States", "jazz"), "Chet Baker": ("trumpet", "United States", "jazz"),
    "Wynton Marsalis": ("trumpet", "United States", "jazz"),
    "Freddie Hubbard": ("trumpet", "United States", "jazz"),
    "Yo-Yo Ma": ("cello", "France", "classical"), "Pablo Casals": ("cello", "Spain", "classical"),
    "Mstislav Rostropovich": ("cello", "Azerbaijan", "classical"),
    "Jacqueline du Pré": ("cello", "United Kingdom", "classical"),
    "Mischa Maisky": ("cello", "Latvia", "classical"), "Steven Isserlis": ("cello", "United Kingdom", "classical"),
    "Ringo Starr": ("drums", "United Kingdom", "rock"), "John Bonham": ("drums", "United Kingdom", "rock"),
    "Keith Moon": ("drums", "United Kingdom", "rock"), "Neil Peart": ("drums", "Canada", "rock"),
    "Buddy Rich": ("drums", "United States", "jazz"), "Travis Barker": ("drums", "United States", "punk rock"),
}
EXTRA_CONTINENTS = {"Israel": "Asia", "Lithuania": "Europe", "Latvia": "Europe", "Azerbaijan": None}

# company that makes products: headquarters city, founder, country
MAKERS = {
    "Microsoft": ("Redmond", "Bill Gates", "United States"),
    "Apple": ("Cupertino", "Steve Jobs", "United States"),
    "Toyota": ("Toyota City", "Kiichiro Toyoda", "Japan"),
    "Nintendo": ("Kyoto", "Fusajiro Yamauchi", "Japan"),
    "Sony": ("Tokyo", "Masaru Ibuka", "Japan"),
    "Ford": ("Dearborn", "Henry Ford", "United States"),
}
# product: maker, kind, year of first release
PRODUCTS: dict[str, tuple[str, str, str]] = {
    "Windows 11": ("Microsoft", "operating system", "2021"), "Windows XP": ("Microsoft", "operating system", "2001"),
    "Xbox 360": ("Microsoft", "video game console", "2005"),
    "Internet Explorer": ("Microsoft", "web browser", "1995"),
    "Surface Pro": ("Microsoft", "tablet computer", "2013"), "Bing": ("Microsoft", "search engine", "2009"),
    "iPhone": ("Apple", "smartphone", "2007"), "iPad": ("Apple", "tablet computer", "2010"),
    "MacBook": ("Apple", "laptop", "2006"), "iPod": ("Apple", "portable music player", "2001"),
    "AirPods": ("Apple", "wireless earbuds", "2016"), "iMac": ("Apple", "desktop computer", "1998"),
    "Corolla": ("Toyota", "car", "1966"), "Camry": ("Toyota", "car", "1982"), "Prius": ("Toyota", "hybrid car", "1997"),
    "Land Cruiser": ("Toyota", "off-road vehicle", "1951"), "RAV4": ("Toyota", "SUV", "1994"),
    "Hilux": ("Toyota", "pickup truck", "1968"),
    "Game Boy": ("Nintendo", "handheld game console", "1989"), "Wii": ("Nintendo", "video game console", "2006"),
    "GameCube": ("Nintendo", "video game console", "2001"), "Wii U": ("Nintendo", "video game console", "2012"),
    "Virtual Boy": ("Nintendo", "video game console", "1995"), "Famicom": ("Nintendo", "video game console", "1983"),
    "PlayStation": ("Sony", "video game console", "1994"), "Walkman": ("Sony", "portable music player", "1979"),
    "Bravia": ("Sony", "television", "2005"), "Aibo": ("Sony", "robot dog", "1999"),
    "Handycam": ("Sony", "camcorder", "1985"), "PlayStation Portable": ("Sony", "handheld game console", "2004"),
    "Mustang": ("Ford", "car", "1964"), "Model T": ("Ford", "car", "1908"), "F-150": ("Ford", "pickup truck", "1975"),
    "Fiesta": ("Ford", "car", "1976"), "Focus": ("Ford", "car", "1998"), "Thunderbird": ("Ford", "car", "1955"),
}

# book: author, original language, literary form, main character (or None)
BOOKS: dict[str, tuple[str, str, str, str | None]] = {
    "Hamlet": ("William Shakespeare", "English", "play", "Prince Hamlet"),
    "Macbeth": ("William Shakespeare", "English", "play", "Macbeth"),
    "Othello": ("William Shakespeare", "English", "play", "Othello"),
    "King Lear": ("William Shakespeare", "English", "play", "King Lear"),
    "Romeo and Juliet": ("William Shakespeare", "English", "play", "Romeo"),
    "The Tempest": ("William Shakespeare", "English", "play", "Prospero"),
    "Oliver Twist": ("Charles Dickens", "English", "novel", "Oliver Twist"),
    "Great Expectations": ("Charles Dickens", "English", "novel", "Pip"),
    "David Copperfield": ("Charles Dickens", "English", "novel", "David Copperfield"),
    "Nicholas Nickleby": ("Charles Dickens", "English", "novel", "Nicholas Nickleby"),
    "Bleak House": ("Charles Dickens", "English", "novel", "Esther Summerson"),
    "A Christmas Carol": ("Charles Dickens", "English", "novella", "Ebenezer Scrooge"),
    "War and Peace": ("Leo Tolstoy", "Russian", "novel", "Pierre Bezukhov"),
    "Anna Karenina": ("Leo Tolstoy", "Russian", "novel", "Anna Karenina"),
    "Resurrection": ("Leo Tolstoy", "Russian", "novel", "Dmitri Nekhlyudov"),
    "The Death of Ivan Ilyich": ("Leo Tolstoy", "Russian", "novella", "Ivan Ilyich"),
    "The Kreutzer Sonata": ("Leo Tolstoy", "Russian", "novella", "Pozdnyshev"),
    "Hadji Murat": ("Leo Tolstoy", "Russian", "novella", "Hadji Murat"),
    "Pride and Prejudice": ("Jane Austen", "English", "novel", "Elizabeth Bennet"),
    "Emma": ("Jane Austen", "English", "novel", "Emma Woodhouse"),
    "Sense and Sensibility": ("Jane Austen", "English", "novel", "Elinor Dashwood"),
    "Persuasion": ("Jane Austen", "English", "novel", "Anne Elliot"),
    "Mansfield Park": ("Jane Austen", "English", "novel", "Fanny Price"),
    "Northanger Abbey": ("Jane Austen", "English", "novel", "Catherine Morland"),
    "Crime and Punishment": ("Fyodor Dostoevsky", "Russian", "novel", "Raskolnikov"),
    "The Brothers Karamazov": ("Fyodor Dostoevsky", "Russian", "novel", "Alyosha Karamazov"),
    "The Idiot": ("Fyodor Dostoevsky", "Russian", "novel", "Prince Myshkin"),
    "The Double": ("Fyodor Dostoevsky", "Russian", "novella", "Yakov Golyadkin"),
    "Notes from Underground": ("Fyodor Dostoevsky", "Russian", "novella", "the Underground Man"),
    "The Gambler": ("Fyodor Dostoevsky", "Russian", "novel", "Alexei Ivanovich"),
    "Nineteen Eighty-Four": ("George Orwell", "English", "novel", "Winston Smith"),
    "Animal Farm": ("George Orwell", "English", "novella", "Napoleon"),
    "Homage to Catalonia": ("George Orwell", "English", "memoir", None),
    "Burmese Days": ("George Orwell", "English", "novel", "John Flory"),
    "Coming Up for Air": ("George Orwell", "English", "novel", "George Bowling"),
    "Keep the Aspidistra Flying": ("George Orwell", "English", "novel", "Gordon Comstock"),
    "Les Misérables": ("Victor Hugo", "French", "novel", "Jean Valjean"),
    "The Hunchback of Notre-Dame": ("Victor Hugo", "French", "novel", "Quasimodo"),
    "The Toilers of the Sea": ("Victor Hugo", "French", "novel", "Gilliatt"),
    "The Man Who Laughs": ("Victor Hugo", "French", "novel", "Gwynplaine"),
    "Bug-Jargal": ("Victor Hugo", "French", "novel", "Bug-Jargal"),
    "Ninety-Three": ("Victor Hugo", "French", "novel", None),
}

# film: director, composer of the score, year, lead actor, original language (None where mixed)
FILMS: dict[str, tuple[str, str | None, str, str | None, str | None]] = {
    "Jaws": ("Steven Spielberg", "John Williams", "1975", "Roy Scheider", "English"),
    "E.T. the Extra-Terrestrial": ("Steven Spielberg", "John Williams", "1982", "Henry Thomas", "English"),
    "Jurassic Park": ("Steven Spielberg", "John Williams", "1993", "Sam Neill", "English"),
    "Schindler's List": ("Steven Spielberg", "John Williams", "1993", "Liam Neeson", "English"),
    "Saving Private Ryan": ("Steven Spielberg", "John Williams", "1998", "Tom Hanks", "English"),
    "Raiders of the Lost Ark": ("Steven Spielberg", "John Williams", "1981", "Harrison Ford", "English"),
    "Inception": ("Christopher Nolan", "Hans Zimmer", "2010", "Leonardo DiCaprio", "English"),
    "Interstellar": ("Christopher Nolan", "Hans Zimmer", "2014", "Matthew McConaughey", "English"),
    "The Dark Knight": ("Christopher Nolan", "Hans Zimmer", "2008", "Christian Bale", "English"),
    "Memento": ("Christopher Nolan", "David Julyan", "2000", "Guy Pearce", "English"),
    "Dunkirk": ("Christopher Nolan", "Hans Zimmer", "2017", "Fionn Whitehead", "English"),
    "Oppenheimer": ("Christopher Nolan", "Ludwig Göransson", "2023", "Cillian Murphy", "English"),
    "Psycho": ("Alfred Hitchcock", "Bernard Herrmann", "1960", "Anthony Perkins", "English"),
    "Vertigo": ("Alfred Hitchcock", "Bernard Herrmann", "1958", "James Stewart", "English"),
    "Rear Window": ("Alfred Hitchcock", "Franz Waxman", "1954", "James Stewart", "English"),
    "The Birds": ("Alfred Hitchcock", None, "1963", "Tippi Hedren", "English"),
    "North by Northwest": ("Alfred Hitchcock", "Bernard Herrmann", "1959", "Cary Grant", "English"),
    "Rebecca": ("Alfred Hitchcock", "Franz Waxman", "1940", "Laurence Olivier", "English"),
    "Pulp Fiction": ("Quentin Tarantino", None, "1994", "John Travolta", "English"),
    "Reservoir Dogs": ("Quentin Tarantino", None, "1992", "Harvey Keitel", "English"),
    "Kill Bill: Volume 1": ("Quentin Tarantino", None, "2003", "Uma Thurman", "English"),
    "Django Unchained": ("Quentin Tarantino", None, "2012", "Jamie Foxx", "English"),
    "Jackie Brown": ("Quentin Tarantino", None, "1997", "Pam Grier", "English"),
    "The Hateful Eight": ("Quentin Tarantino", "Ennio Morricone", "2015", "Samuel L. Jackson", "English"),
    "Spirited Away": ("Hayao Miyazaki", "Joe Hisaishi", "2001", None, "Japanese"),
    "My Neighbor Totoro": ("Hayao Miyazaki", "Joe Hisaishi", "1988", None, "Japanese"),
    "Princess Mononoke": ("Hayao Miyazaki", "Joe Hisaishi", "1997", None, "Japanese"),
    "Howl's Moving Castle": ("Hayao Miyazaki", "Joe Hisaishi", "2004", None, "Japanese"),
    "Kiki's Delivery Service": ("Hayao Miyazaki", "Joe Hisaishi", "1989", None, "Japanese"),
    "Ponyo": ("Hayao Miyazaki", "Joe Hisaishi", "2008", None, "Japanese"),
    "The Shining": ("Stanley Kubrick", None, "1980", "Jack Nicholson", "English"),
    "2001: A Space Odyssey": ("Stanley Kubrick", None, "1968", "Keir Dullea", "English"),
    "A Clockwork Orange": ("Stanley Kubrick", None, "1971", "Malcolm McDowell", "English"),
    "Full Metal Jacket": ("Stanley Kubrick", None, "1987", "Matthew Modine", "English"),
    "Dr. Strangelove": ("Stanley Kubrick", None, "1964", "Peter Sellers", "English"),
    "Barry Lyndon": ("Stanley Kubrick", None, "1975", "Ryan O'Neal", "English"),
    "Gladiator": ("Ridley Scott", "Hans Zimmer", "2000", "Russell Crowe", "English"),
    "Rain Man": ("Barry Levinson", "Hans Zimmer", "1988", "Dustin Hoffman", "English"),
    "Star Wars": ("George Lucas", "John Williams", "1977", "Mark Hamill", "English"),
    "Home Alone": ("Chris Columbus", "John Williams", "1990", "Macaulay Culkin", "English"),
    "Citizen Kane": ("Orson Welles", "Bernard Herrmann", "1941", "Orson Welles", "English"),
    "Taxi Driver": ("Martin Scorsese", "Bernard Herrmann", "1976", "Robert De Niro", "English"),
    "Cape Fear": ("J. Lee Thompson", "Bernard Herrmann", "1962", "Gregory Peck", "English"),
    "The Good, the Bad and the Ugly": ("Sergio Leone", "Ennio Morricone", "1966", "Clint Eastwood", None),
    "Once Upon a Time in the West": ("Sergio Leone", "Ennio Morricone", "1968", "Henry Fonda", None),
    "Cinema Paradiso": ("Giuseppe Tornatore", "Ennio Morricone", "1988", "Philippe Noiret", "Italian"),
    "The Mission": ("Roland Joffé", "Ennio Morricone", "1986", "Robert De Niro", "English"),
    "The Untouchables": ("Brian De Palma", "Ennio Morricone", "1987", "Kevin Costner", "English"),
}

# athlete: sport, country, year of birth
ATHLETES: dict[str, tuple[str, str, str]] = {
    "Lionel Messi": ("football", "Argentina", "1987"), "Cristiano Ronaldo": ("football", "Portugal", "1985"),
    "Pelé": ("football", "Brazil", "1940"), "Diego Maradona": ("football", "Argentina", "1960"),
    "Zinedine Zidane": ("football", "France", "1972"), "David Beckham": ("football", "United Kingdom", "1975"),
    "Michael Jordan": ("basketball", "United States", "1963"), "LeBron James": ("basketball", "United States", "1984"),
    "Kobe Bryant": ("basketball", "United States", "1978"),
    "Shaquille O'Neal": ("basketball", "United States", "1972"),
    "Stephen Curry": ("basketball", "United States", "1988"), "Magic Johnson": ("basketball", "United States", "1959"),
    "Roger Federer": ("tennis", "Switzerland", "1981"), "Serena Williams": ("tennis", "United States", "1981"),
    "Rafael Nadal": ("tennis", "Spain", "1986"), "Novak Djokovic": ("tennis", "Serbia", "1987"),
    "Andre Agassi": ("tennis", "United States", "1970"), "Steffi Graf": ("tennis", "Germany", "1969"),
    "Tiger Woods": ("golf", "United States", "1975"), "Jack Nicklaus": ("golf", "United States", "1940"),
    "Arnold Palmer": ("golf", "United States", "1929"), "Rory McIlroy": ("golf", "United Kingdom", "1989"),
    "Phil Mickelson": ("golf", "United States", "1970"), "Seve Ballesteros": ("golf", "Spain", "1957"),
    "Muhammad Ali": ("boxing", "United States", "1942"), "Mike Tyson": ("boxing", "United States", "1966"),
    "Floyd Mayweather": ("boxing", "United States", "1977"), "Manny Pacquiao": ("boxing", "Philippines", "1978"),
    "Joe Frazier": ("boxing", "United States", "1944"), "Sugar Ray Leonard": ("boxing", "United States", "1956"),
    "Wayne Gretzky": ("ice hockey", "Canada", "1961"), "Sidney Crosby": ("ice hockey", "Canada", "1987"),
    "Mario Lemieux": ("ice hockey", "Canada", "1965"), "Alexander Ovechkin": ("ice hockey", "Russia", "1985"),
    "Bobby Orr": ("ice hockey", "Canada", "1948"), "Gordie Howe": ("ice hockey", "Canada", "1928"),
}
EXTRA_CONTINENTS["Serbia"] = "Europe"

# owner: headquarters city, founder
OWNERS = {
    "Meta": ("Menlo Park", "Mark Zuckerberg"),
    "Google": ("Mountain View", "Larry Page"),
    "Microsoft": ("Redmond", "Bill Gates"),
    "Disney": ("Burbank", "Walt Disney"),
    "Amazon": ("Seattle", "Jeff Bezos"),
}
# brand or company: owner, kind, year founded or launched, country of origin
OWNED: dict[str, tuple[str, str, str, str]] = {
    "Instagram": ("Meta", "photo-sharing app", "2010", "United States"),
    "WhatsApp": ("Meta", "messaging app", "2009", "United States"),
    "Oculus": ("Meta", "virtual reality brand", "2012", "United States"),
    "Threads": ("Meta", "social network", "2023", "United States"),
    "Messenger": ("Meta", "messaging app", "2011", "United States"),
    "Facebook": ("Meta", "social network", "2004", "United States"),
    "YouTube": ("Google", "video-sharing platform", "2005", "United States"),
    "Android": ("Google", "mobile operating system", "2003", "United States"),
    "Fitbit": ("Google", "fitness tracker brand", "2007", "United States"),
    "DeepMind": ("Google", "artificial intelligence lab", "2010", "United Kingdom"),
    "Nest": ("Google", "smart home brand", "2010", "United States"),
    "Blogger": ("Google", "blogging platform", "1999", "United States"),
    "LinkedIn": ("Microsoft", "professional social network", "2002", "United States"),
    "GitHub": ("Microsoft", "code hosting platform", "2008", "United States"),
    "Mojang": ("Microsoft", "video game studio", "2009", "Sweden"),
    "Activision": ("Microsoft", "video game publisher", "1979", "United States"),
    "Bethesda Softworks": ("Microsoft", "video game publisher", "1986", "United States"),
    "Nuance Communications": ("Microsoft", "speech recognition company", "1992", "United States"),
    "Pixar": ("Disney", "animation studio", "1986", "United States"),
    "Marvel Studios": ("Disney", "film studio", "1993", "United States"),
    "Lucasfilm": ("Disney", "film studio", "1971", "United States"),
    "ESPN": ("Disney", "sports television network", "1979", "United States"),
    "ABC": ("Disney", "television network", "1943", "United States"),
    "20th Century Studios": ("Disney", "film studio", "1935", "United States"),
    "Twitch": ("Amazon", "live-streaming platform", "2011", "United States"),
    "Whole Foods Market": ("Amazon", "supermarket chain", "1980", "United States"),
    "Zappos": ("Amazon", "online shoe retailer", "1999", "United States"),
    "Audible": ("Amazon", "audiobook service", "1995", "United States"),
    "IMDb": ("Amazon", "online film database", "1990", "United Kingdom"),
    "Ring": ("Amazon", "home security brand", "2013", "United States"),
}
EXTRA_CONTINENTS["Sweden"] = "Europe"

# hand-written associations for answers that are not entities of the tables above
WORDS = {
    "Europe": ("European Union", "Alps", "Mediterranean"),
    "Asia": ("Himalayas", "Pacific", "Silk Road"),
    "Africa": ("Sahara", "savanna", "Nile"),
    "South America": ("Andes", "Amazon rainforest", "Latin America"),
    "North America": ("Rocky Mountains", "Caribbean", "Great Lakes"),
    "Oceania": ("Pacific Ocean", "islands", "coral reef"),
    "euro": ("€", "eurozone", "European Central Bank"),
    "West African CFA franc": ("CFA", "BCEAO", "franc"),
    "writer": ("novel", "book", "manuscript"), "composer": ("symphony", "orchestra", "score"),
    "painter": ("canvas", "brush", "gallery"), "physicist": ("physics", "theory", "experiment"),
    "politician": ("election", "government", "parliament"), "singer": ("song", "album", "concert"),
    "film director": ("film", "camera", "studio"),
    "guitar": ("strings", "chords", "amplifier"), "piano": ("keys", "keyboard", "pedal"),
    "violin": ("bow", "strings", "orchestra"), "saxophone": ("reed", "brass", "jazz club"),
    "trumpet": ("brass", "valves", "fanfare"), "cello": ("bow", "strings", "chamber music"),
    "drums": ("drumsticks", "cymbals", "beat"),
    "football": ("goal", "ball", "pitch"), "basketball": ("hoop", "dunk", "NBA"),
    "tennis": ("racket", "Wimbledon", "serve"), "golf": ("clubs", "hole", "course"),
    "boxing": ("ring", "gloves", "knockout"), "ice hockey": ("puck", "stick", "rink"),
    "French": ("bonjour",), "English": ("hello",), "Spanish": ("hola",), "German": ("guten Tag",),
    "Italian": ("ciao",), "Portuguese": ("obrigado",), "Arabic": ("salaam",), "Japanese": ("konnichiwa",),
    "Russian": ("privet",),
}

# ---------------------------------------------------------------------------------------------------
# Derived lookups
# ---------------------------------------------------------------------------------------------------


def country_of(place: str) -> str:
    if place in COUNTRIES:
        return place
    return CITIES[place][0]


def continent_of_country(country: str) -> str | None:
    if country in COUNTRIES:
        return COUNTRIES[country][1]
    return EXTRA_CONTINENTS[country]


def landmark_city() -> dict[str, str]:
    return {name: city for city, items in LANDMARKS.items() for name, _ in items}


def landmark_kind() -> dict[str, str]:
    return {name: kind for items in LANDMARKS.values() for name, kind in items}


def cap(text: str) -> str:
    """Sentence-initial form: "the Louvre" -> "The Louvre"."""
    return text[:1].upper() + text[1:]


def article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _by(pairs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for key, value in pairs:
        out[key].append(value)
    return out


def related_words(target: str) -> tuple[str, ...]:
    """Associations of an answer, gathered from every table it appears in (deterministic order)."""
    words: list[str] = []
    if target in LANDMARKS:
        words += [n.removeprefix("the ") for n, _ in LANDMARKS[target][:4]]
    if target in CITIES:
        country, river = CITIES[target]
        if river:
            words.append(river)
        words += [p for p, row in PEOPLE.items() if row[0] == target][:2]
        words.append(COUNTRIES[country][4] if country in COUNTRIES else country)
    if target in COUNTRIES:
        capital, _, langs, currency, demonym = COUNTRIES[target]
        words += [capital, demonym]
        words += [c for c, row in CITIES.items() if row[0] == target and c != capital][:2]
    words += [c for c, row in COUNTRIES.items() if row[1] == target][:4]
    speakers = [c for c, row in COUNTRIES.items() if target in row[2]]
    words += speakers[:2] + [p for p, row in PEOPLE.items() if row[2] == target][:2]
    words += [c for c, row in COUNTRIES.items() if row[3] == target][:3]
    words += [p for p, row in PEOPLE.items() if row[1] == target][:2]
    words += [m for m, row in MUSICIANS.items() if row[0] == target][:2]
    words += [a for a, row in ATHLETES.items() if row[0] == target][:2]
    if target in MAKERS:
        hq, founder, _ = MAKERS[target]
        words += [p for p, row in PRODUCTS.items() if row[0] == target][:3] + [founder, hq]
    if target in OWNERS:
        hq, founder = OWNERS[target]
        words += [p for p, row in OWNED.items() if row[0] == target][:3] + [founder, hq]
    words += [b for b, row in BOOKS.items() if row[0] == target][:3]
    words += [f for f, row in FILMS.items() if row[0] == target or row[1] == target][:3]
    words += list(WORDS.get(target, ()))
    seen: list[str] = []
    for w in words:
        if w != target and w not in seen:
            seen.append(w)
    return tuple(seen)


# ---------------------------------------------------------------------------------------------------
# Relations
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    id: str
    name: str
    templates: tuple[str, ...]  # [0] is the edit prompt; the next ones make paraphrases
    generation: tuple[str, ...]
    sentence_start: bool = True  # whether templates[0] starts with the subject (capitalised then)


RELATIONS = {
    "P276": Relation("P276", "location (city)", (
        "{} is located in the city of", "{} can be found in the city of", "{} stands in the city of",
        "To see {}, tourists travel to the city of", "The city that is home to {} is"),
        ("Visitors to {} often", "The neighbourhood around {} is full of", "A trip to see {} starts with")),
    "P17": Relation("P17", "country", (
        "{} is a city in the country of", "{} is located in the country of", "The city of {} lies in",
        "{} belongs to the country of", "The country where you find {} is"),
        ("People who live in {} usually", "The streets of {} are", "The best thing about {} is")),
    "P30": Relation("P30", "continent", (
        "{} is a country on the continent of", "{} is located on the continent of", "{} belongs to the continent of",
        "The continent where {} lies is", "Geographically, {} is part of"),
        ("Travelling through {}, you will see", "The landscape of {} is", "The climate of {} is")),
    "P37": Relation("P37", "official language", (
        "The official language of {} is", "In {}, the official language is", "The language of government in {} is",
        "Laws in {} are written in", "Schools in {} teach in"),
        ("In {}, people greet each other by saying", "A newspaper from {} is written in", "Signs in {} are")),
    "P38": Relation("P38", "currency", (
        "The currency of {} is the", "In {}, people pay with the", "The official currency used in {} is the",
        "Shops in {} take payment in the", "The money used in {} is the"),
        ("Prices in {} are", "When you buy bread in {}, you pay", "The banks of {}")),
    "P103": Relation("P103", "native language", (
        "The mother tongue of {} is", "The native language of {} is", "{} grew up speaking",
        "The first language of {} was", "{} learned to speak as a child in"),
        ("{} was known for speaking", "Where {} grew up, people", "{}'s favourite word was")),
    "P19": Relation("P19", "place of birth", (
        "{} was born in the city of", "{} was born in", "The birthplace of {} is the city of",
        "{} came into the world in the city of", "The city where {} was born is"),
        ("{} spent childhood days", "{} often remembered the streets of", "As a child, {} used to")),
    "P106": Relation("P106", "occupation", (
        "{} worked as a", "{} was famous as a", "By profession, {} was a", "{} earned a living as a",
        "{} is best known as a"),
        ("Every morning, {} would", "{}'s greatest achievement was", "People admired {} because")),
    "P1303": Relation("P1303", "instrument", (
        "{} is famous for playing the", "{} plays the", "The instrument played by {} is the",
        "{} became a star playing the", "On stage, {} played the"),
        ("At a concert, {}", "{}'s music sounds", "Fans of {} love the way")),
    "P176": Relation("P176", "manufacturer", (
        "{} is a product of", "{} is made by", "{} was developed by the company", "The company behind {} is",
        "{} is produced by"),
        ("The first time I used {}, I", "Reviewers said that {}", "The design of {} is")),
    "P50": Relation("P50", "author", (
        "{} was written by", "The author of {} is", "{} is a work by the author", "The writer of {} is",
        "{} came from the pen of"),
        ("The story of {} begins", "Readers of {} remember", "The opening line of {}")),
    "P641": Relation("P641", "sport", (
        "{} is famous for playing the sport of", "{} is a professional player of", "The sport played by {} is",
        "{} became a champion in the sport of", "{} made a career in"),
        ("Fans remember {} for", "{}'s training every day", "When {} was young,")),
    "P127": Relation("P127", "owned by", (
        "{} is owned by", "The owner of {} is", "{} belongs to the company", "The parent company of {} is",
        "{} is a subsidiary of"),
        ("The headquarters of {}", "Employees at {} say", "The future of {}")),
    "P57": Relation("P57", "director", (
        "{} was directed by", "The director of {} is", "The film {} was directed by", "{} is a film by the director",
        "The filmmaker who directed {} is"),
        ("The opening scene of {}", "Critics praised {} for", "Watching {}, you notice")),
    "P86": Relation("P86", "composer", (
        "The music of {} was composed by", "The soundtrack of {} was written by", "The score of {} is by",
        "The composer of the music for {} is", "The film score of {} was composed by"),
        ("The main theme of {}", "Listening to the soundtrack of {}", "The music in {} sounds")),
}

# attribute templates used when the relation is *not* the edited one
ATTR = {
    "country": "{} is located in the country of",
    "continent": "{} is on the continent of",
    "kind": "{} is a famous",
    "capital": "The capital of {} is",
    "language": "The official language of {} is",
    "currency": "The currency of {} is the",
    "birthplace": "{} was born in the city of",
    "birth_country": "{} was born in the country of",
    "occupation_phrase": "{} worked as",
    "native": "The mother tongue of {} is",
    "genre": "{} is known for playing music in the genre of",
    "product_kind": "{} is a type of",
    "year_released": "{} was first released in the year",
    "origin": "{} comes from the country of",
    "book_language": "{} was originally written in",
    "form": "The literary form of {} is a",
    "main_character": "The main character of {} is",
    "film_year": "{} was released in the year",
    "film_language": "The original language of {} is",
    "star": "The leading actor of {} is",
    "sport_country": "{} represents the country of",
    "born_year": "{} was born in the year",
    "owned_kind": "{} is a",
    "founded": "{} was founded in the year",
}


def fill(template: str, subject: str) -> str:
    if template.startswith("{}"):
        return template.format(cap(subject))
    return template.format(subject)


def probe(key: str, subject: str, answer: str | None) -> list[Probe]:
    return [Probe(fill(ATTR[key], subject), answer)] if answer else []


def attributes(kind: str, subject: str, relation_id: str) -> list[Probe]:
    """Other relations of ``subject``; the edited relation and anything it implies are left out."""
    out: list[Probe] = []
    if kind == "landmark":
        city = landmark_city()[subject]
        country = country_of(city)
        lkind = landmark_kind()[subject]
        if relation_id != "P276":
            out += probe("country", subject, country)
            out += probe("continent", subject, CITY_CONTINENT.get(city) or continent_of_country(country))
        # Moving a landmark to another city moves its country and continent too (those are one-hop
        # questions then), so only facts that do not depend on the city remain.
        out += probe("kind", subject, lkind)
        out.append(Probe(f"{cap(subject)} is a popular tourist", "attraction"))
        out.append(Probe(f"{cap(subject)} is one of the most famous landmarks in the", "world"))
    elif kind == "city":
        country = country_of(subject)
        row = COUNTRIES[country]
        river = CITIES[subject][1]
        if river:
            out.append(Probe(f"The river that flows through {subject} is the", river))
        if relation_id != "P17":
            out += probe("country", subject, country)
        born = [p for p, r in PEOPLE.items() if r[0] == subject]
        out += [Probe(f"{p} was born in the city of", subject) for p in born[:2]]
        out += [Probe(f"{cap(landmark)} is located in the city of", subject)
                for landmark, _ in LANDMARKS.get(subject, [])[:2]]
    elif kind == "country":
        capital, continent, langs, currency, _ = COUNTRIES[subject]
        out += probe("capital", subject, capital)
        if relation_id != "P30":
            out += probe("continent", subject, continent)
        if relation_id != "P37" and len(langs) == 1:
            out += probe("language", subject, langs[0])
        if relation_id != "P38":
            out += probe("currency", subject, currency)
        out.append(Probe(f"A person from {subject} is described as", COUNTRIES[subject][4]))
    elif kind == "person":
        place, occupation, native = PEOPLE[subject]
        if relation_id != "P19":
            out += probe("birthplace", subject, place)
            out += probe("birth_country", subject, country_of(place))
        if relation_id != "P106":
            out += probe("occupation_phrase", subject, article(occupation))
        if relation_id != "P103":
            out += probe("native", subject, native)
        if len(out) < 3 and relation_id != "P106":
            out.append(Probe(f"{cap(subject)} is remembered as", article(occupation)))
        if len(out) < 3 and relation_id != "P103":
            out.append(Probe(f"The native language of {subject} was", native))
    elif kind == "musician":
        _, country, genre = MUSICIANS[subject]
        out += probe("birth_country", subject, country)
        out += probe("genre", subject, genre)
        out += [Probe(f"{cap(subject)} worked as a", "musician")]
    elif kind == "product":
        _, pkind, year = PRODUCTS[subject]
        out += probe("product_kind", subject, pkind)
        out += probe("year_released", subject, year)
        out += [Probe(f"{cap(subject)} was first sold in the", "twentieth century" if year < "2000"
                      else "twenty-first century")]
    elif kind == "book":
        _, lang, form, hero = BOOKS[subject]
        out += probe("book_language", subject, lang)
        out += probe("form", subject, form)
        out += probe("main_character", subject, hero)
        if len(out) < 3:
            out += [Probe(f"{cap(subject)} is a work of", "literature")]
    elif kind == "film":
        director, composer, year, star, lang = FILMS[subject]
        out += probe("film_year", subject, year)
        out += probe("star", subject, star)
        out += probe("film_language", subject, lang)
        if relation_id != "P57":
            out += [Probe(f"{cap(subject)} was directed by", director)]
        if relation_id != "P86" and composer:
            out += [Probe(f"The music of {subject} was composed by", composer)]
    elif kind == "athlete":
        _, country, year = ATHLETES[subject]
        out += probe("sport_country", subject, country)
        out += probe("born_year", subject, year)
        continent = continent_of_country(country)
        out += [Probe(f"{cap(subject)} comes from a country on the continent of", continent)] if continent else []
    elif kind == "owned":
        _, okind, year, origin = OWNED[subject]
        out += probe("owned_kind", subject, article(okind))
        out += probe("founded", subject, year)
        out += probe("origin", subject, origin)
    return out


def one_hop(kind: str, relation_id: str, subject: str, answer: str, new_targets: list[str]) -> list[Probe]:
    """Questions whose answer follows from the edited fact through one more (unedited) hop."""

    def hops(target: str) -> list[tuple[str, str]]:
        if relation_id == "P276":
            out = [(f"{cap(subject)} is located in the country of", country_of(target))]
            river = CITIES[target][1]
            if river:
                out.append((f"{cap(subject)} stands in a city on the river", river))
            return out
        if relation_id == "P17":
            return [(f"{cap(subject)} is in a country whose capital is", COUNTRIES[target][0])]
        if relation_id == "P19":
            return [(f"{cap(subject)} was born in the country of", country_of(target))]
        if relation_id == "P176":
            return [(f"{cap(subject)} is made by a company headquartered in", MAKERS[target][0]),
                    (f"{cap(subject)} is made by a company founded by", MAKERS[target][1])]
        if relation_id == "P127":
            return [(f"{cap(subject)} is owned by a company headquartered in", OWNERS[target][0]),
                    (f"{cap(subject)} is owned by a company founded by", OWNERS[target][1])]
        if relation_id == "P50":
            return [(f"The author of {subject} was born in", PEOPLE[target][0])]
        if relation_id == "P57" and target in PEOPLE:
            return [(f"The director of {subject} was born in", PEOPLE[target][0])]
        if relation_id == "P30":
            return []
        return []

    out = [Probe(p, a) for p, a in hops(answer)]
    for t in new_targets:
        out += [Probe(p, a, target=t) for p, a in hops(t)]
    return out


def reverse_probe(relation_id: str, subject: str, answer: str, group: list[str]) -> Probe | None:
    """Only for facts whose inverse has a single answer."""
    if relation_id == "P176" and subject == "Windows 11":
        return Probe("Microsoft's operating system released in 2021 is", "Windows 11")
    if relation_id == "P37" and len(group) == 1:
        return Probe(f"{answer} is the official language of", subject)
    return None


def pick_new_targets(answer: str, pool: list[str], subject: str, n: int = N_NEW_TARGETS) -> list[str]:
    """Deterministic counterfacts of the same type: rotate through the other answers of the relation."""
    others = [a for a in pool if a != answer]
    start = sum(map(ord, subject)) % len(others)
    rotated = others[start:] + others[:start]
    return rotated[:n]


# ---------------------------------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------------------------------


def groups() -> list[tuple[str, str, dict[str, list[str]]]]:
    """(relation id, subject kind, answer -> subjects) for every relation in the catalog."""
    lc = landmark_city()
    return [
        ("P276", "landmark", {city: [n for n, c in lc.items() if c == city] for city in LANDMARKS}),
        ("P17", "city", _by((row[0], c) for c, row in CITIES.items() if c in MAIN_CITIES)),
        ("P30", "country", _by((row[1], c) for c, row in COUNTRIES.items() if c in MAIN_CONTINENT)),
        ("P37", "country", _by((row[2][0], c) for c, row in COUNTRIES.items() if c in MAIN_LANGUAGE)),
        ("P38", "country", _by((row[3], c) for c, row in COUNTRIES.items() if c in MAIN_CURRENCY)),
        ("P103", "person", _by((row[2], p) for p, row in PEOPLE.items())),
        ("P19", "person", _by((row[0], p) for p, row in PEOPLE.items())),
        ("P106", "person", _by((row[1], p) for p, row in PEOPLE.items() if row[1] in MAIN_OCCUPATIONS)),
        ("P1303", "musician", _by((row[0], m) for m, row in MUSICIANS.items())),
        ("P176", "product", _by((row[0], p) for p, row in PRODUCTS.items())),
        ("P50", "book", _by((row[0], b) for b, row in BOOKS.items())),
        ("P641", "athlete", _by((row[0], a) for a, row in ATHLETES.items())),
        ("P127", "owned", _by((row[0], o) for o, row in OWNED.items())),
        ("P57", "film", _by((row[0], f) for f, row in FILMS.items())),
        ("P86", "film", _by((row[1], f) for f, row in FILMS.items() if row[1])),
    ]


MAIN_CITIES = {c for c, row in CITIES.items() if row[0] in (
    "France", "Germany", "Italy", "Spain", "Japan", "United Kingdom", "Brazil", "Canada", "Australia")}
MAIN_CONTINENT = {
    "France", "Germany", "Italy", "Spain", "Poland", "Sweden",
    "Japan", "China", "India", "Thailand", "Vietnam", "Mongolia",
    "Nigeria", "Kenya", "Ghana", "Ethiopia", "Senegal", "Morocco",
    "Brazil", "Argentina", "Chile", "Peru", "Colombia", "Venezuela",
    "Canada", "Mexico", "Cuba", "Guatemala", "Honduras", "Jamaica",
    "Australia", "New Zealand", "Fiji", "Papua New Guinea", "Samoa", "Tonga",
}
MAIN_LANGUAGE = {
    "France", "Monaco", "Senegal", "Ivory Coast", "Gabon", "Guinea",
    "Spain", "Colombia", "Venezuela", "Cuba", "Guatemala", "Honduras",
    "Portugal", "Brazil", "Angola", "Mozambique", "Cape Verde", "Guinea-Bissau",
    "Saudi Arabia", "Egypt", "Jordan", "Syria", "Libya", "Oman",
    "Ghana", "Nigeria", "Jamaica", "Liberia", "Zambia", "Bahamas",
}
MAIN_CURRENCY = {
    "France", "Germany", "Italy", "Spain", "Portugal", "Greece",
    "Senegal", "Ivory Coast", "Mali", "Niger", "Burkina Faso", "Togo",
}
MAIN_OCCUPATIONS = {"writer", "composer", "painter", "physicist", "politician", "film director"}

# The survey's examples come first in their groups.
FIRST = {"the Louvre", "Windows 11", "Danielle Darrieux"}


def single_facts() -> list[Case]:
    cases: list[Case] = []
    for relation_id, kind, by_answer in groups():
        rel = RELATIONS[relation_id]
        pool = sorted(a for a, subjects in by_answer.items() if len(subjects) >= N_NEIGHBOURS + 1)
        if relation_id in ("P38", "P30", "P37"):  # any answer of the relation is a plausible counterfact
            pool = sorted({a for a in _all_answers(relation_id)})
        for answer in sorted(by_answer):
            subjects = by_answer[answer]
            if len(subjects) < N_NEIGHBOURS + 1:
                continue
            subjects = sorted(subjects, key=lambda s: (s not in FIRST, list(by_answer[answer]).index(s)))
            chosen = [s for s in subjects if len(attributes(kind, s, relation_id)) >= 3][:PER_GROUP]
            for i, subject in enumerate(chosen):
                others = [s for s in subjects if s != subject]
                neighbours = [Probe(fill(rel.templates[(i + j) % 2], s), answer)
                              for j, s in enumerate(others[:N_NEIGHBOURS])]
                new = pick_new_targets(answer, pool, subject)
                related = tuple((t, related_words(t)) for t in [answer, *new])
                cases.append(Case(
                    id=f"{relation_id}:{_slug(subject)}",
                    relation_id=relation_id,
                    relation=rel.name,
                    prompt=rel.templates[0],
                    subject=cap(subject) if rel.templates[0].startswith("{}") else subject,
                    target_true=answer,
                    targets_new=tuple(new),
                    paraphrases=tuple(fill(t, subject) for t in rel.templates[1:4]),
                    neighbourhood=tuple(neighbours),
                    attributes=tuple(attributes(kind, subject, relation_id)),
                    aliases=SUBJECT_ALIASES.get(subject, ()),
                    reverse=reverse_probe(relation_id, subject, answer, subjects),
                    related=related,
                    one_hop=tuple(one_hop(kind, relation_id, subject, answer, new)),
                    generation_prompts=tuple(fill(t, subject) for t in rel.generation),
                    provenance="catalog",
                ))
    return cases


def _all_answers(relation_id: str) -> set[str]:
    if relation_id == "P38":
        return {row[3] for row in COUNTRIES.values()}
    if relation_id == "P30":
        return {row[1] for row in COUNTRIES.values() if row[1]}
    return {"French", "Spanish", "Portuguese", "Arabic", "English", "German", "Italian", "Japanese", "Russian"}


def _slug(text: str) -> str:
    keep = [ch.lower() if ch.isalnum() else "-" for ch in text.removeprefix("the ")]
    return "-".join(part for part in "".join(keep).split("-") if part)


# ---------------------------------------------------------------------------------------------------
# Multi-hop chains, conflicts, round trips
# ---------------------------------------------------------------------------------------------------


def edit(relation_id: str, subject: str, old: str, new: str, cid: str, template: str | None = None) -> Case:
    rel = RELATIONS.get(relation_id)
    tpl = template or rel.templates[0]
    return Case(id=cid, relation_id=relation_id, relation=rel.name if rel else relation_id,
                prompt=tpl, subject=cap(subject) if tpl.startswith("{}") else subject,
                target_true=old, targets_new=(new,), provenance="catalog")


def multihop_chains() -> list[MultiHopCase]:
    out: list[MultiHopCase] = []
    # landmark -> city -> country; the first hop is edited.
    cities = sorted(LANDMARKS)
    for i, city in enumerate(cities):
        for landmark, _ in LANDMARKS[city][:2]:
            new_city = cities[(i + 3) % len(cities)]
            if country_of(new_city) == country_of(city):
                new_city = cities[(i + 4) % len(cities)]
            old_c, new_c = country_of(city), country_of(new_city)
            out.append(MultiHopCase(
                id=f"mh:landmark-country:{_slug(landmark)}",
                edits=(edit("P276", landmark, city, new_city, f"P276:{_slug(landmark)}"),),
                questions=(f"In which country is the city that is home to {landmark}?",
                           f"{cap(landmark)} is in a city that belongs to which country?"),
                answer=old_c, answer_aliases=COUNTRY_ALIASES.get(old_c, ()),
                new_answer=new_c, new_answer_aliases=COUNTRY_ALIASES.get(new_c, ()),
                single_hops=(Probe(fill(RELATIONS["P276"].templates[0], landmark), city),
                             Probe(fill(RELATIONS["P17"].templates[0], city), old_c)),
                new_single_hops=(Probe(fill(RELATIONS["P276"].templates[0], landmark), new_city),
                                 Probe(fill(RELATIONS["P17"].templates[0], new_city), new_c)),
                provenance="catalog",
            ))
    # book -> author -> native language; the first hop is edited.
    authors = sorted({row[0] for row in BOOKS.values()})
    for book, (author, *_rest) in sorted(BOOKS.items())[::4]:
        lang = PEOPLE[author][2]
        candidates = [a for a in authors if PEOPLE[a][2] != lang]
        new_author = candidates[sum(map(ord, book)) % len(candidates)]
        new_lang = PEOPLE[new_author][2]
        out.append(MultiHopCase(
            id=f"mh:book-language:{_slug(book)}",
            edits=(edit("P50", book, author, new_author, f"P50:{_slug(book)}"),),
            questions=(f"What is the mother tongue of the author of {book}?",
                       f"Which language did the writer of {book} grow up speaking?"),
            answer=lang, new_answer=new_lang,
            single_hops=(Probe(fill(RELATIONS["P50"].templates[0], book), author),
                         Probe(fill(RELATIONS["P103"].templates[0], author), lang)),
            new_single_hops=(Probe(fill(RELATIONS["P50"].templates[0], book), new_author),
                             Probe(fill(RELATIONS["P103"].templates[0], new_author), new_lang)),
            provenance="catalog",
        ))
    # film -> director -> birthplace -> country; the first two hops are edited.
    directors = sorted({row[0] for row in FILMS.values() if row[0] in PEOPLE})
    far_cities = ["Sydney", "Toronto", "Rio de Janeiro", "Mumbai", "Cairo", "Osaka", "Madrid", "Munich"]
    for k, (film, row) in enumerate(sorted((f, r) for f, r in FILMS.items() if r[0] in PEOPLE)[::3]):
        director = row[0]
        new_director = [d for d in directors if d != director][k % (len(directors) - 1)]
        place = PEOPLE[director][0]
        new_place_old = PEOPLE[new_director][0]
        new_place = [c for c in far_cities if country_of(c) != country_of(new_place_old)][k % 4]
        out.append(MultiHopCase(
            id=f"mh:film-director-country:{_slug(film)}",
            edits=(edit("P57", film, director, new_director, f"P57:{_slug(film)}"),
                   edit("P19", new_director, new_place_old, new_place, f"P19:{_slug(new_director)}")),
            questions=(f"In which country was the director of {film} born?",
                       f"The person who directed {film} was born in which country?"),
            answer=country_of(place), answer_aliases=COUNTRY_ALIASES.get(country_of(place), ()),
            new_answer=country_of(new_place), new_answer_aliases=COUNTRY_ALIASES.get(country_of(new_place), ()),
            single_hops=(Probe(fill(RELATIONS["P57"].templates[0], film), director),
                         Probe(fill(RELATIONS["P19"].templates[0], director), place),
                         Probe(fill(RELATIONS["P17"].templates[0], place), country_of(place))),
            new_single_hops=(Probe(fill(RELATIONS["P57"].templates[0], film), new_director),
                             Probe(fill(RELATIONS["P19"].templates[0], new_director), new_place),
                             Probe(fill(RELATIONS["P17"].templates[0], new_place), country_of(new_place))),
            provenance="catalog",
        ))
    return out


def conflict_cases() -> list[ConflictCase]:
    out: list[ConflictCase] = []
    capital_t, capital_of_t = "The capital of {} is", "{} is the capital of"
    countries = [c for c in sorted(COUNTRIES) if c in MAIN_CONTINENT]
    for i, country in enumerate(countries[:24]):
        capital = COUNTRIES[country][0]
        others = [c for c, row in CITIES.items() if row[0] == country and c != capital]
        if not others:
            continue
        new_capital = others[0]
        third = countries[(i + 5) % len(countries)]
        out.append(ConflictCase(
            id=f"conflict:reverse:capital:{_slug(country)}",
            type="reverse", rule="P36>P1376",
            edits=(Case(id="edit-1", relation_id="P36", relation="capital", prompt=capital_t, subject=country,
                        target_true=capital, targets_new=(new_capital,), provenance="catalog"),
                   Case(id="edit-2", relation_id="P1376", relation="capital of", prompt=capital_of_t,
                        subject=new_capital, target_true=country, targets_new=(third,), provenance="catalog")),
            tied=(Probe(capital_t.format(country), capital), Probe(capital_of_t.format(capital), country)),
            implied_object=country,
            prompts=(("P36", ("The capital of {} is", "The capital city of {} is", "{}'s capital is")),
                     ("P1376", ("{} is the capital of", "{} is the capital city of", "{} serves as the capital of"))),
            provenance="catalog",
        ))
    # reverse: A's notable work becomes W2 (implying W2 was written by A); then W2's author moves to C.
    work_t, author_t = "The notable work of {} is", "{} was written by"
    authors = sorted({row[0] for row in BOOKS.values()})
    for i, author in enumerate(authors):
        works = [b for b, row in BOOKS.items() if row[0] == author]
        for j in range(2):
            foreign = [b for b, row in BOOKS.items() if row[0] != author]
            new_work = foreign[(7 * i + 11 * j) % len(foreign)]
            other = [a for a in authors if a not in (author, BOOKS[new_work][0])]
            third = other[(i + j) % len(other)]
            out.append(ConflictCase(
                id=f"conflict:reverse:work:{_slug(author)}:{j}",
                type="reverse", rule="P800>P50",
                edits=(Case(id="edit-1", relation_id="P800", relation="notable work", prompt=work_t, subject=author,
                            target_true=works[j], targets_new=(new_work,), provenance="catalog"),
                       Case(id="edit-2", relation_id="P50", relation="author", prompt=author_t,
                            subject=new_work, target_true=author, targets_new=(third,), provenance="catalog")),
                tied=(Probe(work_t.format(author), works[j]), Probe(author_t.format(works[j]), author)),
                implied_object=author,
                prompts=(("P800", ("The notable work of {} is", "{} is best known for writing", "{}'s famous work is")),
                         ("P50", ("{} was written by", "The author of {} is", "The writer of {} is"))),
                provenance="catalog",
            ))
    # composite: landmark in city & city in country => landmark in country
    lc = landmark_city()
    land_country_t = "{} is located in the country of"
    city_country_t = RELATIONS["P17"].templates[0]
    countries_pool = ["France", "Germany", "Italy", "Spain", "Japan", "Brazil", "Canada", "Australia", "India"]
    for i, (landmark, city) in enumerate(sorted(lc.items())[::2][:24]):
        country = country_of(city)
        cands = [c for c in countries_pool if c != country]
        mid, last = cands[i % len(cands)], cands[(i + 3) % len(cands)]
        out.append(ConflictCase(
            id=f"conflict:composite:{_slug(landmark)}",
            type="composite", rule="P276&P17>P17",
            edits=(edit("P17", city, country, mid, "edit-1"),
                   Case(id="edit-2", relation_id="P17", relation="country", prompt=land_country_t,
                        subject=cap(landmark), target_true=country, targets_new=(last,), provenance="catalog")),
            tied=(Probe(fill(RELATIONS["P276"].templates[0], landmark), city),
                  Probe(fill(city_country_t, city), country),
                  Probe(fill(land_country_t, landmark), country)),
            prerequisites=(0,),
            implied_object=mid,
            provenance="catalog",
        ))
    return out


def round_trips() -> list[RoundTripCase]:
    out: list[RoundTripCase] = []
    prompts = ("The official language of {} is", "In {}, the official languages include",
               "One of the official languages of {} is", "Government documents in {} are written in")
    pool = ("Japanese", "Russian", "Portuguese", "Spanish", "Arabic", "Italian", "Korean")
    multi = [c for c in sorted(COUNTRIES) if len(COUNTRIES[c][2]) >= 2]
    for i, country in enumerate(multi):
        langs = COUNTRIES[country][2]
        new = [p for p in pool if p not in langs][i % 5]
        out.append(RoundTripCase(
            id=f"roundtrip:P37:{_slug(country)}", relation_id="P37", relation="official language",
            prompt=prompts[0], subject=country, object=langs[0], new_object=new, true_objects=langs,
            prompts=prompts[1:], type=f"1-{len(langs)}@P37", provenance="catalog",
        ))
    return out


def write_jsonl(path: Path, records) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False, sort_keys=False) + "\n")


def main() -> int:
    data = ROOT / "data"
    data.mkdir(exist_ok=True)
    facts = single_facts()
    ids = [c.id for c in facts]
    assert len(ids) == len(set(ids)), "duplicate fact ids"
    chains, conflicts, trips = multihop_chains(), conflict_cases(), round_trips()
    write_jsonl(data / "facts.jsonl", facts)
    write_jsonl(data / "multihop.jsonl", chains)
    write_jsonl(data / "conflicts.jsonl", conflicts)
    write_jsonl(data / "roundtrip.jsonl", trips)
    relations = sorted({c.relation_id for c in facts})
    kinds = defaultdict(int)
    for c in conflicts:
        kinds[c.type] += 1
    print(f"{len(facts)} facts over {len(relations)} relations; {len(chains)} chains; "
          f"conflicts {dict(kinds)}; {len(trips)} round trips")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
