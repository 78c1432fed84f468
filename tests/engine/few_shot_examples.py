"""A small labelled support set and queries shared by the export tests (three demo-like intents)."""

SUPPORT = [
    ("wake me up at six thirty tomorrow", "alarm"), ("set an alarm for 7 am", "alarm"),
    ("alarm at noon please", "alarm"),
    ("will it rain this afternoon", "weather"), ("how hot is it outside today", "weather"),
    ("what's the forecast for tonight", "weather"),
    ("play some jazz", "music"), ("put on my workout playlist", "music"), ("start the song again", "music"),
]
QUERY = ["set my alarm for 5:45", "is it going to snow", "play something relaxing", "do I need an umbrella"]
