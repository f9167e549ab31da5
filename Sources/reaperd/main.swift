import ReaperCore
